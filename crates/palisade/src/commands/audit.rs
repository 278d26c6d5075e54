//! `palisade audit …`: verifying the signed audit log (online or offline), inclusion proofs, exported timelines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_audit::{NoteVerifier, StoredCheckpoint, Verifier, VerifyReport, verify_inclusion};
use palisade_http::views::*;
use serde_json::json;

use crate::Global;
use crate::output::{Progress, data, say};

use super::{client, data_dir};

/// `palisade audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute the whole log against its signed checkpoints; name the first
    /// entry that was edited, deleted, inserted or reordered.
    Verify {
        /// Read this database directly (offline) instead of the API: a SQLite
        /// file or a `postgres://` URL.
        #[arg(long, value_name = "FILE|URL")]
        db: Option<palisade_store::Database>,
        /// Checkpoint verifier key file [default: DATA_DIR/audit/log.pub].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
    /// Fetch and check the inclusion proof of one entry.
    Proof {
        /// Entry index.
        index: u64,
        /// Checkpoint verifier key file [default: DATA_DIR/audit/log.pub].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
    /// Check an exported device timeline (`palisade device timeline --export`):
    /// each audit entry in it is proven in the signed log. Works offline.
    VerifyTimeline {
        /// The exported timeline.
        file: PathBuf,
        /// Checkpoint verifier key file [default: DATA_DIR/audit/log.pub].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
}

/// Checks an inclusion proof: the checkpoint's signature under the pinned
/// key, and the entry's path to its root. Returns the entry and the size of
/// the log the checkpoint signs.
pub fn check_inclusion(
    key: &NoteVerifier,
    p: &InclusionView,
) -> anyhow::Result<(palisade_audit::Entry, u64)> {
    let cp = key
        .verify(&p.checkpoint, None)
        .context("the checkpoint's signature does not verify with the pinned key")?;
    let path: Vec<[u8; 32]> = p
        .path
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| v.try_into().ok())
                .context("malformed proof hash")
        })
        .collect::<anyhow::Result<_>>()?;
    let entry = p.entry.to_entry();
    verify_inclusion(&entry.digest(), entry.index, cp.size, &cp.root, &path).with_context(|| {
        format!(
            "the inclusion proof of entry {} does not verify: the entry is not in the signed log",
            entry.index
        )
    })?;
    Ok((entry, cp.size))
}

/// The pinned checkpoint verifier key.
pub fn load_vkey(g: &Global, path: Option<&Path>) -> anyhow::Result<Option<NoteVerifier>> {
    let default = data_dir(g).join("audit/log.pub");
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default, false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(NoteVerifier::parse(text.trim()).with_context(
            || format!("{} is not a checkpoint verifier key", path.display()),
        )?)),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub(crate) const PAGE: u32 = 2000;

/// Runs an audit command.
pub async fn audit(g: &Global, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { db, log_key } => {
            let pinned = load_vkey(g, log_key.as_deref())?;
            let report = match db {
                Some(path) => verify_db(&path, pinned).await?,
                None => verify_api(g, pinned).await?,
            };
            report_verify(g.json, &report)
        }
        AuditCmd::VerifyTimeline { file, log_key } => {
            verify_timeline(g, &file, log_key.as_deref()).await
        }
        AuditCmd::Proof { index, log_key } => {
            let c = client(g)?;
            let key = match load_vkey(g, log_key.as_deref())? {
                Some(k) => k,
                None => bail!(
                    "no checkpoint verifier key: pass --log-key FILE (the server's audit/log.pub)"
                ),
            };
            let p: InclusionView = c
                .call(
                    Method::GET,
                    &format!("/api/v1/audit/proof/inclusion?index={index}"),
                    None,
                )
                .await?;
            let (entry, size) = check_inclusion(&key, &p)?;
            if entry.index != index {
                bail!(
                    "the server answered with entry {} instead of {index}",
                    entry.index
                );
            }
            let cp_size = size;
            say(format!(
                "entry {index} ({} {} by {}) is included in the signed log of {} entries",
                entry.action, entry.subject, entry.actor, cp_size
            ));
            data(
                g.json,
                &p,
                &["index", "action", "subject", "actor", "checkpoint size"],
                vec![vec![
                    index.to_string(),
                    entry.action,
                    entry.subject,
                    entry.actor,
                    cp_size.to_string(),
                ]],
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn verify_db(
    db: &palisade_store::Database,
    pinned: Option<NoteVerifier>,
) -> anyhow::Result<VerifyReport> {
    let Some(key) = pinned else {
        bail!(
            "no checkpoint verifier key: pass --log-key FILE (audit/log.pub of the data directory)"
        );
    };
    let reader = palisade_store::SqlReader::open_read_only(db)
        .await
        .with_context(|| format!("opening {db}"))?;
    let mut cps: Vec<StoredCheckpoint> = Vec::new();
    loop {
        let from = cps.last().map_or(0, |c| c.size + 1);
        let page = reader.audit_checkpoints(from, PAGE).await?;
        let done = page.len() < PAGE as usize;
        cps.extend(page);
        if done {
            break;
        }
    }
    let total = cps.last().map_or(0, |c| c.size);
    let mut v = Verifier::new(&key, Some(key.name()), &cps);
    let progress = Progress::new("verifying audit entries");
    let mut from = 0;
    loop {
        let page = reader.audit_entries(from, PAGE).await?;
        let n = page.len();
        for e in page {
            from = e.entry.index + 1;
            v.push(e.entry, e.recorded_digest);
        }
        progress.set(from, total);
        if n < PAGE as usize {
            break;
        }
    }
    progress.finish();
    reader.close().await;
    Ok(v.finish())
}

pub(crate) async fn verify_api(
    g: &Global,
    pinned: Option<NoteVerifier>,
) -> anyhow::Result<VerifyReport> {
    let c = client(g)?;
    let head: AuditHeadView = c
        .call(Method::GET, "/api/v1/audit/checkpoint", None)
        .await?;
    let key = match pinned {
        Some(k) => {
            if k.to_vkey() != head.verifier_key {
                say(
                    "warning: the server presents a different checkpoint key than the pinned one; using the pinned key",
                );
            }
            k
        }
        None => {
            say(
                "warning: no pinned checkpoint key (--log-key); trusting the key the server presents",
            );
            NoteVerifier::parse(&head.verifier_key)
                .context("the server's verifier key is malformed")?
        }
    };
    let mut cps: Vec<StoredCheckpoint> = Vec::new();
    loop {
        let from = cps.last().map_or(0, |c| c.size + 1);
        let page: Vec<CheckpointView> = c
            .call(
                Method::GET,
                &format!("/api/v1/audit/checkpoints?from={from}&limit={PAGE}"),
                None,
            )
            .await?;
        let done = page.len() < PAGE as usize;
        cps.extend(page.into_iter().map(|p| StoredCheckpoint {
            size: p.size,
            note: p.note,
        }));
        if done {
            break;
        }
    }
    let mut v = Verifier::new(&key, Some(key.name()), &cps);
    let progress = Progress::new("verifying audit entries");
    let mut from = 0u64;
    loop {
        let page: Vec<AuditEntryView> = c
            .call(
                Method::GET,
                &format!("/api/v1/audit/entries?from={from}&limit={PAGE}"),
                None,
            )
            .await?;
        let n = page.len();
        for e in &page {
            let digest: [u8; 32] = hex::decode(&e.recorded_digest)
                .ok()
                .and_then(|d| d.try_into().ok())
                .context("malformed digest from the server")?;
            from = e.index + 1;
            v.push(e.to_entry(), digest);
        }
        progress.set(from, head.size);
        if n < PAGE as usize {
            break;
        }
    }
    progress.finish();
    Ok(v.finish())
}

pub(crate) fn report_verify(json: bool, r: &VerifyReport) -> anyhow::Result<ExitCode> {
    let latest = r.latest.as_ref().map_or(0, |c| c.size);
    let value = json!({
        "ok": r.problem.is_none(),
        "entries": r.entries,
        "checkpoints": r.checkpoints,
        "latest_verified_size": latest,
        "first_bad_entry": r.problem.as_ref().map(|p| json!({
            "index": p.index, "kind": p.kind.to_string(), "detail": p.detail })),
    });
    if json {
        data(true, &value, &[], vec![]);
    }
    match &r.problem {
        None => {
            say(format!(
                "audit log verified: {} entries, {} signed checkpoints, newest covers {latest}",
                r.entries, r.checkpoints
            ));
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            say(format!(
                "audit log verification FAILED: first bad entry is #{} ({}): {}",
                p.index, p.kind, p.detail
            ));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `palisade audit verify-timeline FILE`: every audit item of an exported
/// timeline is in the signed log (inclusion proof against a checkpoint signed
/// by the pinned key) and says what the log says.
pub async fn verify_timeline(
    g: &Global,
    file: &PathBuf,
    log_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let key = load_vkey(g, log_key)?
        .context("no checkpoint verifier key: pass --log-key FILE (the server's audit/log.pub)")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if bytes.len() > 256 * 1024 * 1024 {
        bail!("{} is larger than 256 MiB", file.display());
    }
    let t: TimelineView = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not an exported timeline", file.display()))?;
    let mut largest = 0;
    let mut proven = std::collections::BTreeMap::new();
    for p in &t.proofs {
        let (entry, size) = check_inclusion(&key, p)?;
        largest = largest.max(size);
        proven.insert(entry.index, entry);
    }
    let mut checked = 0;
    for i in t.items.iter().filter(|i| i.source == "audit") {
        let index = i.audit_index.context("an audit item without its index")?;
        let e = proven.get(&index).with_context(|| {
            format!(
                "audit entry {index} ({}) has no inclusion proof in the bundle",
                i.kind
            )
        })?;
        let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
        if e.action != i.kind || e.time_ms != i.at_ms || detail != i.detail {
            bail!(
                "audit entry {index} in the timeline ({} at {}) differs from the proven entry ({} at {})",
                i.kind,
                i.at_ms,
                e.action,
                e.time_ms
            );
        }
        checked += 1;
    }
    say(format!(
        "timeline of {}: {checked} audit entries verified against signed checkpoints (log of up to {largest} entries); {} other items (alerts, events) are not covered by the log",
        t.device,
        t.items.len() - checked
    ));
    data(
        g.json,
        &json!({ "device": t.device, "verified_audit_entries": checked, "log_size": largest }),
        &["device", "verified audit entries", "log size"],
        vec![vec![
            t.device.clone(),
            checked.to_string(),
            largest.to_string(),
        ]],
    );
    Ok(ExitCode::SUCCESS)
}
