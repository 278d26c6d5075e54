//! `palisade advisories …`: vulnerability advisories (OSV records) against
//! the fleet. Import reads offline sources here — one JSON file (a record or
//! an array of records), a directory of them, or the per-ecosystem zip that
//! OSV publishes (`all.zip`) — within bounds (a zip bomb is refused, not
//! inflated), and sends the records in batches, with progress.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use serde_json::Value;

use crate::Global;
use crate::output::{Progress, data, say};

use super::{client, dash, enc};

/// Largest record file or zip entry read (as the server's bound).
const MAX_RECORD_BYTES: u64 = palisade_advisory::osv::MAX_RECORD_BYTES as u64;
/// Largest JSON file read whole (an array of records).
const MAX_FILE_BYTES: u64 = 512 << 20;
/// Most entries read from one zip or directory.
const MAX_ENTRIES: usize = 5_000_000;
/// An entry inflating to more than this many times its compressed size is
/// a zip bomb.
const MAX_RATIO: u64 = 200;
/// Deepest directory walked.
const MAX_DEPTH: usize = 8;

/// `palisade advisories …`
#[derive(Debug, Subcommand)]
pub enum AdvisoryCmd {
    /// Import OSV records: a JSON file (a record or an array), a directory of
    /// them, or OSV's per-ecosystem zip. Offline and idempotent: records
    /// already stored as they are count as unchanged; changed ones
    /// (`modified`) replace the stored ones.
    Import {
        /// The file, directory or zip.
        path: PathBuf,
        /// Records sent per request (at most 1000).
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// The advisories, newest first, with the releases and devices each hits.
    List {
        /// Only those that hit firmware devices run.
        #[arg(long)]
        exposed: bool,
    },
    /// The releases and devices an advisory hits: its id, a CVE or a GHSA.
    Affected {
        /// The advisory.
        id: String,
    },
    /// The advisory's vulnerability-handling report for the CRA: first seen,
    /// exposed devices day by day, the first fixed release, the share of the
    /// affected fleet updated, the days to fix.
    Report {
        /// The advisory.
        id: String,
        /// CSV (one row per day) instead of a summary.
        #[arg(long)]
        csv: bool,
    },
    /// Record that the vulnerability is actively exploited: starts the CRA
    /// Article 14 reporting clock (24 h early warning, 72 h notification).
    Exploited {
        /// The advisory.
        id: String,
        /// Aware since: YYYY-MM-DD or RFC 3339 [default: now].
        #[arg(long, value_name = "DATE")]
        aware_at: Option<String>,
        /// How the exploitation is known (e.g. "CISA KEV, 2026-12-07").
        #[arg(long)]
        note: String,
    },
    /// The CRA Article 14 pack of an actively exploited vulnerability, ready
    /// to paste into ENISA's reporting form (with --json: the fields).
    CraPack {
        /// The advisory.
        id: String,
    },
}

/// One record read from a source, or why it could not be.
type Read1 = (String, Result<Value, String>);

/// The JSON records of `path`, with where each came from.
fn read_source(path: &Path) -> anyhow::Result<Vec<Read1>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, 0, &mut files)?;
        files.sort();
        return Ok(files
            .into_iter()
            .map(|f| {
                let r = read_bounded(&f).and_then(|b| parse_one(&b));
                (f.display().to_string(), r)
            })
            .collect());
    }
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    if n == 4 && head == *b"PK\x03\x04" {
        return read_zip(path);
    }
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{} is {} bytes, over {MAX_FILE_BYTES}: split it, or give OSV's zip",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let name = path.display().to_string();
    Ok(match v {
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("{name}[{i}]"), Ok(r)))
            .collect(),
        one => vec![(name, Ok(one))],
    })
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        bail!(
            "{} is nested deeper than {MAX_DEPTH} directories",
            dir.display()
        );
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&p, depth + 1, out)?;
        } else if t.is_file() && p.extension().is_some_and(|x| x == "json") {
            if out.len() >= MAX_ENTRIES {
                bail!("more than {MAX_ENTRIES} files under {}", dir.display());
            }
            out.push(p);
        }
    }
    Ok(())
}

fn read_bounded(p: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut b = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut b)
        .map_err(|e| e.to_string())?;
    if b.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!("larger than {MAX_RECORD_BYTES} bytes"));
    }
    Ok(b)
}

fn parse_one(b: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(b).map_err(|e| format!("not JSON: {e}"))
}

/// The `.json` entries of a zip, each bounded before and while it is read.
fn read_zip(path: &Path) -> anyhow::Result<Vec<Read1>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut z = zip::ZipArchive::new(f)
        .with_context(|| format!("{} is not a readable zip", path.display()))?;
    if z.len() > MAX_ENTRIES {
        bail!(
            "{} has {} entries, over {MAX_ENTRIES}",
            path.display(),
            z.len()
        );
    }
    let mut out = Vec::with_capacity(z.len());
    for i in 0..z.len() {
        let mut e = match z.by_index(i) {
            Ok(e) => e,
            Err(err) => {
                out.push((format!("{}#{i}", path.display()), Err(err.to_string())));
                continue;
            }
        };
        let entry = e.name().map(|n| n.into_owned()).unwrap_or_default();
        if !e.is_file() || !entry.ends_with(".json") {
            continue;
        }
        let name = format!("{}:{entry}", path.display());
        let (size, packed) = (e.size(), e.compressed_size().max(1));
        if size > MAX_RECORD_BYTES {
            out.push((
                name,
                Err(format!("inflates to {size} bytes, over {MAX_RECORD_BYTES}")),
            ));
            continue;
        }
        if size / packed > MAX_RATIO {
            out.push((
                name,
                Err(format!("inflates {}× (a zip bomb)", size / packed)),
            ));
            continue;
        }
        // The header's size is not trusted: the read itself is bounded.
        let mut b = Vec::new();
        let r = (&mut e)
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut b)
            .map_err(|err| err.to_string())
            .and_then(|_| {
                if b.len() as u64 > MAX_RECORD_BYTES || b.len() as u64 > size {
                    Err("inflates to more than its header says".to_owned())
                } else {
                    parse_one(&b)
                }
            });
        out.push((name, r));
    }
    Ok(out)
}

/// Runs an advisories command.
pub async fn advisories(g: &Global, cmd: AdvisoryCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        AdvisoryCmd::Import { path, batch } => {
            if !(1..=1000).contains(&batch) {
                bail!("--batch is 1 to 1000 records");
            }
            let records = read_source(&path)?;
            let total = records.len();
            let mut unreadable: Vec<(String, String)> = Vec::new();
            let mut good = Vec::with_capacity(total);
            for (name, r) in records {
                match r {
                    Ok(v) => good.push(v),
                    Err(e) => unreadable.push((name, e)),
                }
            }
            let progress = Progress::new("importing");
            let mut sum = serde_json::json!({
                "new": 0, "updated": 0, "unchanged": 0, "withdrawn": 0, "alerted": 0,
                "refused": [], "exposed": [], "unreadable": [],
            });
            let mut done = unreadable.len();
            for chunk in good.chunks(batch) {
                let r: Value = c
                    .call(
                        Method::POST,
                        "/api/v1/advisories",
                        Some(&Value::Array(chunk.to_vec())),
                    )
                    .await?;
                for k in ["new", "updated", "unchanged", "withdrawn", "alerted"] {
                    sum[k] = (sum[k].as_u64().unwrap_or(0) + r[k].as_u64().unwrap_or(0)).into();
                }
                for k in ["refused", "exposed"] {
                    if let (Some(to), Some(from)) = (sum[k].as_array_mut(), r[k].as_array()) {
                        to.extend(from.iter().cloned());
                    }
                }
                done += chunk.len();
                progress.set(done as u64, total as u64);
            }
            progress.finish();
            if let Some(list) = sum["unreadable"].as_array_mut() {
                list.extend(
                    unreadable
                        .iter()
                        .map(|(n, e)| serde_json::json!({ "source": n, "error": e })),
                );
            }
            let refused = sum["refused"].as_array().map_or(0, Vec::len) + unreadable.len();
            say(format!(
                "{total} records read: {} new, {} updated, {} unchanged ({} of them withdrawn), {refused} refused",
                sum["new"], sum["updated"], sum["unchanged"], sum["withdrawn"]
            ));
            let rows: Vec<Vec<String>> = sum["exposed"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    ["advisory", "model", "version", "devices"]
                        .iter()
                        .map(|k| match &e[*k] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect();
            if !rows.is_empty() {
                say(format!(
                    "running firmware newly exposed ({} recent advisories alerted; older ones: advisories list --exposed):",
                    sum["alerted"]
                ));
            }
            data(
                g.json,
                &sum,
                &["advisory", "model", "release", "devices"],
                rows,
            );
            for (n, e) in unreadable.iter().take(20) {
                say(format!("refused {n}: {e}"));
            }
            for r in sum["refused"].as_array().into_iter().flatten().take(20) {
                say(format!("refused {}: {}", r["id"], r["error"]));
            }
            Ok(if refused > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        AdvisoryCmd::List { exposed } => {
            let list: Vec<Value> = c
                .call(
                    Method::GET,
                    &format!("/api/v1/advisories?exposed={exposed}"),
                    None::<&Value>,
                )
                .await?;
            let rows = list
                .iter()
                .map(|a| {
                    vec![
                        a["id"].as_str().unwrap_or("").to_owned(),
                        dash(a["severity"].as_str()),
                        a["releases"].to_string(),
                        a["devices"].to_string(),
                        if a["withdrawn"].is_null() {
                            ""
                        } else {
                            "withdrawn"
                        }
                        .to_owned(),
                        a["summary"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(60)
                            .collect(),
                    ]
                })
                .collect();
            data(
                g.json,
                &list,
                &["id", "severity", "releases", "devices", "", "summary"],
                rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        AdvisoryCmd::Report { id, csv } => {
            let path = format!(
                "/api/v1/advisories/{}/report{}",
                enc(&id),
                if csv { "?format=csv" } else { "" }
            );
            if csv {
                let (status, body) = c.send_bytes(Method::GET, &path, None).await?;
                anyhow::ensure!(
                    status.is_success(),
                    "the report of {id} failed ({status}): {}",
                    String::from_utf8_lossy(&body).trim()
                );
                crate::output::raw(&String::from_utf8_lossy(&body));
                return Ok(ExitCode::SUCCESS);
            }
            let r: Value = c.call(Method::GET, &path, None::<&Value>).await?;
            if !g.json {
                say(format!(
                    "{} ({}): first seen {}; {} device(s) exposed now; first fix {}; {} day(s) to fix; {} of the affected fleet updated{}",
                    r["advisory"].as_str().unwrap_or(""),
                    r["aliases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r["first_seen_ms"],
                    r["exposed_devices"],
                    r["first_fix"]["version"].as_str().map_or_else(
                        || "none yet".to_owned(),
                        |v| format!("{} {v}", r["first_fix"]["model"].as_str().unwrap_or(""))
                    ),
                    r["days_to_fix"]
                        .as_i64()
                        .map_or_else(|| "–".to_owned(), |d| d.to_string()),
                    r["fleet_updated_share"]
                        .as_f64()
                        .map_or_else(|| "–".to_owned(), |s| format!("{:.1} %", s * 100.0)),
                    if r["exploited"].is_null() {
                        ""
                    } else {
                        "; ACTIVELY EXPLOITED"
                    }
                ));
            }
            let rows = r["exposure"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| vec![dash(d["day"].as_str()), d["devices"].to_string()])
                .collect();
            data(g.json, &r, &["day", "exposed devices"], rows);
            Ok(ExitCode::SUCCESS)
        }
        AdvisoryCmd::Exploited { id, aware_at, note } => {
            let r: Value = c
                .call(
                    Method::POST,
                    &format!("/api/v1/advisories/{}/exploited", enc(&id)),
                    Some(&serde_json::json!({ "aware_at": aware_at, "note": note })),
                )
                .await?;
            say(format!(
                "{} is recorded as actively exploited; see palisade advisories cra-pack {id}",
                r["advisory"].as_str().unwrap_or(&id)
            ));
            data(
                g.json,
                &r,
                &["advisory", "aware since"],
                vec![vec![
                    dash(r["advisory"].as_str()),
                    r["aware_ms"].to_string(),
                ]],
            );
            Ok(ExitCode::SUCCESS)
        }
        AdvisoryCmd::CraPack { id } => {
            let r: Value = c
                .call(
                    Method::GET,
                    &format!("/api/v1/advisories/{}/cra-pack", enc(&id)),
                    None::<&Value>,
                )
                .await?;
            if g.json {
                crate::output::raw(&format!("{r}\n"));
            } else {
                crate::output::raw(r["text"].as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        AdvisoryCmd::Affected { id } => {
            let r: Value = c
                .call(
                    Method::GET,
                    &format!("/api/v1/advisories/{}/affected", enc(&id)),
                    None::<&Value>,
                )
                .await?;
            if !g.json {
                let ids: Vec<&str> = r["advisories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["id"].as_str())
                    .collect();
                for rel in r["releases"].as_array().into_iter().flatten() {
                    say(format!(
                        "{} {}: {} {} ({}), {} device(s); fixed by {}{}",
                        rel["model"].as_str().unwrap_or(""),
                        rel["version"].as_str().unwrap_or(""),
                        rel["component"].as_str().unwrap_or(""),
                        rel["range"].as_str().unwrap_or(""),
                        ids.join(", "),
                        rel["devices"],
                        rel["fixed_by"]
                            .as_str()
                            .unwrap_or("no accepted release yet"),
                        rel["rollout"]
                            .as_str()
                            .map(|r| format!(", rollout {r}"))
                            .unwrap_or_default()
                    ));
                }
            }
            let rows = r["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    ["device", "model", "site", "firmware", "fixed_by", "rollout"]
                        .iter()
                        .map(|k| dash(d[*k].as_str()))
                        .collect()
                })
                .collect();
            data(
                g.json,
                &r,
                &["device", "model", "site", "firmware", "fixed by", "rollout"],
                rows,
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zip_bombs_and_oversized_entries_are_refused_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.zip");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("GHSA-1.json", opts).unwrap();
        z.write_all(br#"{"id":"GHSA-1","modified":"2024-01-01T00:00:00Z"}"#)
            .unwrap();
        z.start_file("bomb.json", opts).unwrap();
        z.write_all(&vec![b' '; 2 << 20]).unwrap();
        z.start_file("huge.json", opts).unwrap();
        let mut big = b"[\"".to_vec();
        for i in 0..(MAX_RECORD_BYTES / 8 + 1) {
            big.extend_from_slice(format!("{:07x},", i * 2_654_435_761 % 0xfff_ffff).as_bytes());
        }
        z.write_all(&big).unwrap();
        z.start_file("README.md", opts).unwrap();
        z.write_all(b"not a record").unwrap();
        z.finish().unwrap();
        let got = read_source(&path).unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].1.as_ref().is_ok_and(|v| v["id"] == "GHSA-1"));
        assert!(
            got[1].1.as_ref().unwrap_err().contains("zip bomb"),
            "{:?}",
            got[1]
        );
        assert!(
            got[2].1.as_ref().unwrap_err().contains("over"),
            "{:?}",
            got[2]
        );
    }
}
