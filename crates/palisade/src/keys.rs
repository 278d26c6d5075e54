//! `palisade keys …`: the offline key ceremony for the TUF image repository, and
//! `palisade tuf …`: installing its results on the server.
//!
//! Ceremony (offline, on a machine that never talks to the fleet):
//! ```text
//! palisade keys generate --dir keys root-1 root-2 root-3 targets-1 targets-2
//! palisade tuf online-keys > online.json            # from the server
//! palisade keys root --dir keys --root-key root-1,root-2,root-3 --root-threshold 2 \
//!     --targets-key targets-1,targets-2 --targets-threshold 2 \
//!     --online-keys online.json --sign-with root-1,root-2 --out root.json
//! palisade tuf set-root root.json
//! palisade tuf targets-draft > draft.json            # after releases are accepted
//! palisade keys sign-targets --dir keys --root root.json --key targets-1,targets-2 \
//!     --draft draft.json --out targets.json
//! palisade tuf publish targets.json
//! ```

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_server::tuf::{SPEC_VERSION, generate_key, public_key, sign_role};
use serde_json::Value;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{RoleKeys, RoleType, Root, Signed, Targets};

use crate::Global;
use crate::output::{raw, say};

/// `palisade keys …` (offline).
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Generate Ed25519 signing keys (PKCS#8 DER, 0600) named NAME.pk8 in DIR.
    Generate {
        /// Key directory (keep it offline).
        #[arg(long)]
        dir: PathBuf,
        /// Key names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Create and sign root metadata.
    Root {
        /// Key directory.
        #[arg(long)]
        dir: PathBuf,
        /// Root keys (names in DIR).
        #[arg(long, value_delimiter = ',', required = true)]
        root_key: Vec<String>,
        /// Signatures a root needs.
        #[arg(long)]
        root_threshold: u64,
        /// Targets keys (names in DIR).
        #[arg(long, value_delimiter = ',', required = true)]
        targets_key: Vec<String>,
        /// Signatures a targets role needs.
        #[arg(long)]
        targets_threshold: u64,
        /// The server's online keys (`palisade tuf online-keys`).
        #[arg(long, value_name = "FILE")]
        online_keys: PathBuf,
        /// Root version (1 for a new repository).
        #[arg(long, default_value_t = 1)]
        root_version: u64,
        /// Lifetime in days.
        #[arg(long, default_value_t = 365)]
        expires_days: u32,
        /// Root keys that sign now (at least the threshold; when rotating,
        /// the current root's threshold of its keys too).
        #[arg(long, value_delimiter = ',', required = true)]
        sign_with: Vec<String>,
        /// When rotating: the current signed root, whose keys among
        /// --sign-with also sign the new one (the server and every client
        /// accept root N+1 only if root N's threshold signed it).
        #[arg(long, value_name = "FILE")]
        previous_root: Option<PathBuf>,
        /// Where to write the signed root.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a targets draft (`palisade tuf targets-draft`) with targets keys.
    SignTargets {
        /// Key directory.
        #[arg(long)]
        dir: PathBuf,
        /// The signed root (names the targets keys).
        #[arg(long, value_name = "FILE")]
        root: PathBuf,
        /// Targets keys that sign.
        #[arg(long, value_delimiter = ',', required = true)]
        key: Vec<String>,
        /// The draft.
        #[arg(long, value_name = "FILE")]
        draft: PathBuf,
        /// Where to write the signed targets.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `palisade tuf …` (against the server).
#[derive(Debug, Subcommand)]
pub enum TufCmd {
    /// Print the server's online snapshot and timestamp keys (for `keys root`).
    OnlineKeys {
        /// The next keys instead (made on first ask; admin): a root naming
        /// them rotates the online keys when `tuf set-root` installs it.
        #[arg(long)]
        next: bool,
    },
    /// Install root metadata signed in a key ceremony (admin).
    SetRoot {
        /// The signed root.
        file: PathBuf,
    },
    /// Print the targets role to sign offline (every accepted release).
    TargetsDraft,
    /// Publish offline-signed targets; the server signs snapshot and timestamp.
    Publish {
        /// The signed targets.
        file: PathBuf,
    },
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pk8"))
}

async fn keys_of(dir: &Path, names: &[String]) -> anyhow::Result<Vec<(Decoded<Hex>, Key)>> {
    let mut out = Vec::new();
    for n in names {
        let (_, v) = public_key(&key_path(dir, n)).await?;
        let key: Key = serde_json::from_value(v)?;
        out.push((key.key_id()?, key));
    }
    Ok(out)
}

fn nz(n: u64, what: &str) -> anyhow::Result<NonZeroU64> {
    NonZeroU64::new(n).with_context(|| format!("{what} must be at least 1"))
}

/// Runs a key ceremony command.
pub async fn keys(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::Generate { dir, names } => {
            for n in &names {
                let p = key_path(&dir, n);
                generate_key(&p)?;
                let (id, _) = public_key(&p).await?;
                say(format!("{n}: {} (key id {id})", p.display()));
            }
        }
        KeysCmd::Root {
            dir,
            root_key,
            root_threshold,
            targets_key,
            targets_threshold,
            online_keys,
            root_version: version,
            expires_days,
            sign_with,
            previous_root,
            out,
        } => {
            let online: Value = serde_json::from_slice(
                &std::fs::read(&online_keys)
                    .with_context(|| format!("reading {}", online_keys.display()))?,
            )?;
            let mut keys = HashMap::new();
            let mut roles = HashMap::new();
            for (role, names, threshold) in [
                (RoleType::Root, &root_key, root_threshold),
                (RoleType::Targets, &targets_key, targets_threshold),
            ] {
                if threshold as usize > names.len() {
                    bail!(
                        "{role} threshold {threshold} exceeds its {} keys",
                        names.len()
                    );
                }
                let ks = keys_of(&dir, names).await?;
                roles.insert(
                    role,
                    RoleKeys {
                        keyids: ks.iter().map(|(id, _)| id.clone()).collect(),
                        threshold: nz(threshold, "a threshold")?,
                        _extra: HashMap::new(),
                    },
                );
                keys.extend(ks);
            }
            for (role, field) in [
                (RoleType::Snapshot, "snapshot"),
                (RoleType::Timestamp, "timestamp"),
            ] {
                let key: Key = serde_json::from_value(online[field]["key"].clone())
                    .with_context(|| format!("{} has no {field} key", online_keys.display()))?;
                let id = key.key_id()?;
                roles.insert(
                    role,
                    RoleKeys {
                        keyids: vec![id.clone()],
                        threshold: nz(1, "a threshold")?,
                        _extra: HashMap::new(),
                    },
                );
                keys.insert(id, key);
            }
            // The ceremony runs offline, by hand, on the system clock.
            let now_ms = palisade_core::Clock::now_ms(&palisade_core::SystemClock);
            let root = Root {
                spec_version: SPEC_VERSION.into(),
                consistent_snapshot: false,
                version: nz(version, "the version")?,
                expires: palisade_server::tuf::expiry(
                    now_ms + i64::from(expires_days) * 86_400_000,
                )?,
                keys,
                roles,
                _extra: HashMap::new(),
            };
            let signers: Vec<PathBuf> = sign_with.iter().map(|n| key_path(&dir, n)).collect();
            let buf = sign_role(root.clone(), &root, &signers).await?;
            let mut signed: Signed<Root> = serde_json::from_slice(&buf)?;
            if (signed.signatures.len() as u64) < root_threshold {
                bail!(
                    "only {} of the {root_threshold} root signatures needed: give more --sign-with keys",
                    signed.signatures.len()
                );
            }
            let buf = match previous_root {
                None => buf,
                Some(prev) => {
                    // Rotation: the current root's keys sign the new root too.
                    let old: Signed<Root> = serde_json::from_slice(
                        &std::fs::read(&prev)
                            .with_context(|| format!("reading {}", prev.display()))?,
                    )
                    .with_context(|| format!("{} is not signed root metadata", prev.display()))?;
                    anyhow::ensure!(
                        old.signed.version.get() + 1 == version,
                        "the new root must be version {} to follow {} (version {})",
                        old.signed.version.get() + 1,
                        prev.display(),
                        old.signed.version
                    );
                    let by_old: Signed<Root> = serde_json::from_slice(
                        &sign_role(root.clone(), &old.signed, &signers).await?,
                    )?;
                    let need = old
                        .signed
                        .roles
                        .get(&RoleType::Root)
                        .map_or(1, |r| r.threshold.get());
                    anyhow::ensure!(
                        by_old.signatures.len() as u64 >= need,
                        "only {} of the current root's {need} signatures: give its keys in --sign-with",
                        by_old.signatures.len()
                    );
                    for sig in by_old.signatures {
                        if !signed.signatures.iter().any(|x| x.keyid == sig.keyid) {
                            signed.signatures.push(sig);
                        }
                    }
                    serde_json::to_vec_pretty(&signed)?
                }
            };
            std::fs::write(&out, &buf).with_context(|| format!("writing {}", out.display()))?;
            say(format!(
                "signed root v{version} written to {}",
                out.display()
            ));
        }
        KeysCmd::SignTargets {
            dir,
            root,
            key,
            draft,
            out,
        } => {
            let root: Signed<Root> = serde_json::from_slice(
                &std::fs::read(&root).with_context(|| format!("reading {}", root.display()))?,
            )?;
            let targets: Targets = serde_json::from_slice(
                &std::fs::read(&draft).with_context(|| format!("reading {}", draft.display()))?,
            )
            .context("the draft is not a TUF targets role")?;
            let signers: Vec<PathBuf> = key.iter().map(|n| key_path(&dir, n)).collect();
            let n = targets.targets.len();
            let buf = sign_role(targets, &root.signed, &signers).await?;
            std::fs::write(&out, &buf).with_context(|| format!("writing {}", out.display()))?;
            say(format!(
                "signed targets ({n} images) written to {}",
                out.display()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn put_json(c: &crate::client::Client, path: &str, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (status, body) = c
        .send_bytes(Method::PUT, path, Some(("application/json", bytes.into())))
        .await?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{msg} (HTTP {status})");
    }
    Ok(())
}

/// Runs a TUF repository command against the server.
pub async fn tuf(g: &Global, cmd: TufCmd) -> anyhow::Result<ExitCode> {
    let c = crate::commands::client(g)?;
    match cmd {
        TufCmd::OnlineKeys { next } => {
            let v: Value = if next {
                c.call(Method::POST, "/api/v1/tuf/online-keys/next", None)
                    .await?
            } else {
                c.call(Method::GET, "/api/v1/tuf/online-keys", None).await?
            };
            raw(&serde_json::to_string_pretty(&v)?);
        }
        TufCmd::TargetsDraft => {
            let v: Value = c
                .call(Method::GET, "/api/v1/tuf/targets-draft", None)
                .await?;
            raw(&serde_json::to_string_pretty(&v)?);
        }
        TufCmd::SetRoot { file } => {
            put_json(&c, "/api/v1/tuf/root", &file).await?;
            say("root installed");
        }
        TufCmd::Publish { file } => {
            put_json(&c, "/api/v1/tuf/targets", &file).await?;
            say("targets published; snapshot and timestamp signed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
