//! The SQLite store: WAL mode, `synchronous = FULL`, one writer task that groups
//! concurrent commits into one transaction, a small pool of read-only readers.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use palisade_audit::{
    Checkpoint, Digest32, Entry, EntryDraft, MerkleLog, NoteVerifier, StoredCheckpoint,
    sign_checkpoint,
};
use palisade_core::{
    Clock, DeviceId, DeviceState, ModelId, OperatorName, Role, RolloutName, Signer, SiteName,
    SupplierName, Tag,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{RwLock, mpsc, oneshot};

use crate::{
    AlertFilter, AlertRecord, AuditHead, BatchRecord, CertFilter, CertRecord, CertStatus, Change,
    CommandRecord, ConsistencyProof, DeviceEventRecord, DeviceFilter, DeviceRecord, EdgeRecord,
    EnrollmentTokenRecord, FirmwareRecord, HardwareTrust, InclusionProof, ModelPolicyRecord,
    ModelRecord, Onboarding, PlacementRecord, Receipt, ReleaseRecord, RolloutDeviceRecord,
    RolloutRecord, SiteRecord, Store, StoreError, StoredEntry, SupplierKeyRecord, SupplierRecord,
    TokenRecord, TpmVendorRecord, UpdateRecord,
};

/// Most commits grouped into one transaction.
const MAX_BATCH: usize = 512;
/// Commits waiting for the writer before callers wait for room.
const QUEUE: usize = 4096;
const DEFAULT_LIMIT: u32 = 1000;

/// How the audit log is sealed: its origin line and the Ed25519 checkpoint key.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The checkpoint origin (the log's name).
    pub origin: String,
    /// The checkpoint key's name.
    pub key_name: String,
    /// The checkpoint signer (Ed25519).
    pub signer: Arc<dyn Signer>,
}

impl AuditConfig {
    /// The verifier for this log's checkpoints.
    pub fn verifier(&self) -> Result<NoteVerifier, StoreError> {
        NoteVerifier::new(&self.key_name, self.signer.public_key_raw())
            .map_err(|e| StoreError::Checkpoint(e.to_string()))
    }
}

fn ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn base_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
}

/// Read access to a Palisade SQLite database (also used offline by `audit verify --db`).
#[derive(Debug, Clone)]
pub struct SqliteReader {
    pool: SqlitePool,
}

impl SqliteReader {
    /// Opens an existing database read-only.
    pub async fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound {
                what: "database",
                key: path.display().to_string(),
            });
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(base_options(path).read_only(true))
            .await?;
        Ok(Self { pool })
    }

    /// Audit entries from `from`, at most `limit`, in storage order.
    pub async fn audit_entries(
        &self,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, actor, action, subject, outcome, detail, digest
             FROM audit_entries WHERE seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Checkpoints with size ≥ `from_size`, at most `limit`, by size.
    pub async fn audit_checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT size, note FROM audit_checkpoints WHERE size >= ? ORDER BY size LIMIT ?",
        )
        .bind(i64::try_from(from_size).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredCheckpoint {
                    size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                    note: r.try_get("note")?,
                })
            })
            .collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn entry_from_row(r: &SqliteRow) -> Result<StoredEntry, StoreError> {
    let digest: Vec<u8> = r.try_get("digest")?;
    let recorded_digest: Digest32 = digest.try_into().map_err(|_| StoreError::Corrupt {
        what: "audit entry",
        detail: "digest is not 32 bytes".into(),
    })?;
    Ok(StoredEntry {
        entry: Entry {
            index: u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or(u64::MAX),
            time_ms: r.try_get("time_ms")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            subject: r.try_get("subject")?,
            outcome: r.try_get("outcome")?,
            detail: r.try_get("detail")?,
        },
        recorded_digest,
    })
}

fn alert_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AlertRecord, StoreError> {
    Ok(AlertRecord {
        id: r.try_get("id")?,
        dedup_key: r.try_get("dedup_key")?,
        detector: r.try_get("detector")?,
        severity: r.try_get("severity")?,
        device: r.try_get("device_id")?,
        peer: r.try_get("peer")?,
        state: r.try_get("state")?,
        summary: r.try_get("summary")?,
        evidence: r.try_get("evidence")?,
        last_evidence: r.try_get("last_evidence")?,
        count: u64::try_from(r.try_get::<i64, _>("count")?).map_err(|e| corrupt("alert", e))?,
        first_ms: r.try_get("first_ms")?,
        last_ms: r.try_get("last_ms")?,
        acked_by: r.try_get("acked_by")?,
        acked_ms: r.try_get("acked_ms")?,
        resolved_by: r.try_get("resolved_by")?,
        resolved_ms: r.try_get("resolved_ms")?,
        note: r.try_get("note")?,
        responses: r.try_get("responses")?,
    })
}

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

fn model_from_row(r: &SqliteRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        id: ModelId::parse(r.try_get("id")?).map_err(|e| corrupt("model", e))?,
        description: r.try_get("description")?,
        cert_validity_days: r.try_get("cert_validity_days")?,
        policy_version: r.try_get("policy_version")?,
        approval_required: r.try_get::<i64, _>("approval_required")? != 0,
        allowed_key_types: r
            .try_get::<String, _>("allowed_key_types")?
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        attestation: r.try_get("attestation")?,
        supplier: r
            .try_get::<Option<String>, _>("supplier")?
            .map(|s| SupplierName::parse(&s))
            .transpose()
            .map_err(|e| corrupt("model", e))?,
        support_until_ms: r.try_get("support_until_ms")?,
        security_update_days: r.try_get("security_update_days")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn device_from_row(r: &SqliteRow) -> Result<DeviceRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(DeviceRecord {
        id: DeviceId::parse(r.try_get("id")?).map_err(|e| corrupt("device", e))?,
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("device", e))?,
        state: DeviceState::parse(&state).ok_or_else(|| corrupt("device", &state))?,
        hardware_serial: r.try_get("hardware_serial")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        onboarding: Onboarding {
            supplier: r
                .try_get::<Option<String>, _>("supplier")?
                .map(|s| SupplierName::parse(&s))
                .transpose()
                .map_err(|e| corrupt("device", e))?,
            batch_id: r.try_get("batch_id")?,
            birth_cert_sha256: r.try_get("birth_cert_sha256")?,
            enrolled_key_sha256: r.try_get("enrolled_key_sha256")?,
            attached_policy: r.try_get("attached_policy")?,
            pending_since_ms: r.try_get("pending_since_ms")?,
            approved_ms: r.try_get("approved_ms")?,
        },
        last_seen_ms: r.try_get("last_seen_ms")?,
        reported_firmware: r.try_get("reported_firmware")?,
        hardware: HardwareTrust {
            key_protection: r.try_get("key_protection")?,
            ak_public: r.try_get("ak_public")?,
            ek_sha256: r.try_get("ek_sha256")?,
            attestation_status: r.try_get("attestation_status")?,
            attestation_detail: r.try_get("attestation_detail")?,
            attested_ms: r.try_get("attested_ms")?,
        },
    })
}

fn tpm_vendor_from_row(r: &SqliteRow) -> Result<TpmVendorRecord, StoreError> {
    Ok(TpmVendorRecord {
        sha256: r.try_get("sha256")?,
        subject: r.try_get("subject")?,
        ca_der: r.try_get("ca_der")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn supplier_key_from_row(r: &SqliteRow) -> Result<SupplierKeyRecord, StoreError> {
    Ok(SupplierKeyRecord {
        keyid: r.try_get("keyid")?,
        supplier: SupplierName::parse(r.try_get("supplier")?)
            .map_err(|e| corrupt("supplier key", e))?,
        spki_der: r.try_get("spki_der")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn release_from_row(r: &SqliteRow) -> Result<ReleaseRecord, StoreError> {
    Ok(ReleaseRecord {
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("release", e))?,
        version: r.try_get("version")?,
        security_version: u64::try_from(r.try_get::<i64, _>("security_version")?)
            .map_err(|e| corrupt("release", e))?,
        hardware: r
            .try_get::<String, _>("hardware")?
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        image_sha256: r.try_get("image_sha256")?,
        image_len: u64::try_from(r.try_get::<i64, _>("image_len")?)
            .map_err(|e| corrupt("release", e))?,
        sbom_sha256: r.try_get("sbom_sha256")?,
        provenance_sha256: r.try_get("provenance_sha256")?,
        signed_by: r.try_get("signed_by")?,
        builder_id: r.try_get("builder_id")?,
        uploaded_by: r.try_get("uploaded_by")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn firmware_from_row(r: &SqliteRow) -> Result<FirmwareRecord, StoreError> {
    Ok(FirmwareRecord {
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("firmware", e))?,
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn command_from_row(r: &SqliteRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        id: r.try_get("id")?,
        device: DeviceId::parse(r.try_get("device_id")?).map_err(|e| corrupt("command", e))?,
        name: r.try_get("name")?,
        args: r.try_get("args")?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        acked_ms: r.try_get("acked_ms")?,
        result: r.try_get("result")?,
    })
}

fn supplier_from_row(r: &SqliteRow) -> Result<SupplierRecord, StoreError> {
    Ok(SupplierRecord {
        name: SupplierName::parse(r.try_get("name")?).map_err(|e| corrupt("supplier", e))?,
        ca_der: r.try_get("ca_der")?,
        ca_sha256: r.try_get("ca_sha256")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn enrollment_token_from_row(r: &SqliteRow) -> Result<EnrollmentTokenRecord, StoreError> {
    let hash: Vec<u8> = r.try_get("secret_hash")?;
    Ok(EnrollmentTokenRecord {
        id: r.try_get("id")?,
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("enrolment token", e))?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("enrolment token", "hash is not 32 bytes"))?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        used_ms: r.try_get("used_ms")?,
        used_device: r.try_get("used_device")?,
    })
}

fn cert_from_row(r: &SqliteRow) -> Result<CertRecord, StoreError> {
    let status: String = r.try_get("status")?;
    let device: Option<String> = r.try_get("device_id")?;
    Ok(CertRecord {
        serial: r.try_get("serial")?,
        profile: r.try_get("profile")?,
        subject: r.try_get("subject")?,
        device: device
            .map(|d| DeviceId::parse(&d))
            .transpose()
            .map_err(|e| corrupt("certificate", e))?,
        not_before_ms: r.try_get("not_before_ms")?,
        not_after_ms: r.try_get("not_after_ms")?,
        status: match status.as_str() {
            "valid" => CertStatus::Valid,
            "revoked" => CertStatus::Revoked,
            other => return Err(corrupt("certificate", other)),
        },
        revoked_ms: r.try_get("revoked_ms")?,
        reason: r.try_get("reason")?,
        der: r.try_get("der")?,
        issued_ms: r.try_get("issued_ms")?,
    })
}

fn token_from_row(r: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let role: String = r.try_get("role")?;
    let hash: Vec<u8> = r.try_get("secret_hash")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        operator: OperatorName::parse(r.try_get("operator")?).map_err(|e| corrupt("token", e))?,
        role: Role::from_str(&role).map_err(|e| corrupt("token", e))?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("token", "hash is not 32 bytes"))?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

struct Job {
    changes: Vec<Change>,
    audit: Vec<EntryDraft>,
    reply: oneshot::Sender<Result<Receipt, StoreError>>,
}

/// The Merkle tree of the committed log.
#[derive(Debug)]
struct LogState {
    tree: MerkleLog,
}

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    reader: SqliteReader,
    tx: mpsc::Sender<Job>,
    log: Arc<RwLock<LogState>>,
    head: Arc<Mutex<Option<AuditHead>>>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`, rebuilds
    /// the audit tree and checks it against the newest signed checkpoint, then
    /// starts the writer task.
    pub async fn open(
        path: &Path,
        audit: AuditConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let opts = base_options(path).create_if_missing(true);
        let mut conn = opts.connect().await?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        let verifier = audit.verifier()?;
        let (tree, head) = load_tree(
            &mut conn,
            &verifier,
            &audit.origin,
            &path.display().to_string(),
        )
        .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(base_options(path).read_only(true))
            .await?;
        let log = Arc::new(RwLock::new(LogState { tree }));
        let head = Arc::new(Mutex::new(head));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            conn,
            rx,
            log: log.clone(),
            head: head.clone(),
            audit,
            verifier,
            clock,
            path: path.display().to_string(),
        };
        tokio::spawn(writer.run());
        Ok(Self {
            reader: SqliteReader { pool },
            tx,
            log,
            head,
        })
    }

    fn pool(&self) -> &SqlitePool {
        &self.reader.pool
    }

    /// One row by a text key, mapped.
    ///
    /// Read with `fetch_all`, not `fetch_optional`: a statement left unfinished
    /// after its first row keeps the pooled connection's read snapshot open, and
    /// later reads on that connection would not see newer commits.
    async fn one<T>(
        &self,
        sql: &'static str,
        key: &str,
        map: fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        sqlx::query(sql)
            .bind(key)
            .fetch_all(self.pool())
            .await?
            .first()
            .map(map)
            .transpose()
    }

    /// Every row of a query without parameters, mapped.
    async fn all<T>(
        &self,
        sql: &'static str,
        map: fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        sqlx::query(sql)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(map)
            .collect()
    }
}

async fn load_tree(
    conn: &mut SqliteConnection,
    verifier: &NoteVerifier,
    origin: &str,
    path: &str,
) -> Result<(MerkleLog, Option<AuditHead>), StoreError> {
    let damaged = |detail: String| StoreError::AuditDamaged {
        path: path.to_owned(),
        detail,
    };
    let rows = sqlx::query(
        "SELECT seq, time_ms, actor, action, subject, outcome, detail, digest
         FROM audit_entries ORDER BY seq",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tree = MerkleLog::new();
    for r in &rows {
        let stored = entry_from_row(r)?;
        if stored.entry.index != tree.len() {
            return Err(damaged(format!("entry {} is missing", tree.len())));
        }
        tree.push(stored.entry.digest());
    }
    let last = sqlx::query("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .next();
    let Some(last) = last else {
        if tree.is_empty() {
            return Ok((tree, None));
        }
        return Err(damaged("entries exist but no checkpoint does".into()));
    };
    let note: String = last.try_get("note")?;
    let cp = verifier
        .verify(&note, Some(origin))
        .map_err(|e| damaged(format!("newest checkpoint: {e}")))?;
    if cp.size != tree.len() {
        return Err(damaged(format!(
            "newest checkpoint covers {} entries, the table holds {}",
            cp.size,
            tree.len()
        )));
    }
    if cp.root != tree.root() {
        return Err(damaged(
            "recomputed root differs from the signed root".into(),
        ));
    }
    Ok((
        tree,
        Some(AuditHead {
            size: cp.size,
            note,
        }),
    ))
}

struct Writer {
    conn: SqliteConnection,
    rx: mpsc::Receiver<Job>,
    log: Arc<RwLock<LogState>>,
    head: Arc<Mutex<Option<AuditHead>>>,
    audit: AuditConfig,
    verifier: NoteVerifier,
    clock: Arc<dyn Clock>,
    path: String,
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(())
}

fn conflict(what: &'static str, key: &str, reason: &str) -> StoreError {
    StoreError::Conflict {
        what,
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn map_unique(e: sqlx::Error, what: &'static str, key: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            conflict(what, key, "already exists")
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            conflict(what, key, "refers to something that does not exist")
        }
        _ => StoreError::Database(e),
    }
}

impl Writer {
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.process(jobs).await;
        }
        tracing::debug!("store writer stopped");
    }

    async fn process(&mut self, jobs: Vec<Job>) {
        let now_ms = ms(self.clock.now());
        if let Err(e) = exec(&mut self.conn, "BEGIN IMMEDIATE").await {
            let msg = e.to_string();
            for j in jobs {
                let _ = j.reply.send(Err(StoreError::Checkpoint(msg.clone())));
            }
            return;
        }
        let log_lock = self.log.clone();
        let mut log = log_lock.write().await;
        let base = log.tree.len();
        let mut pending: Vec<Digest32> = Vec::new();
        let mut results = Vec::with_capacity(jobs.len());
        let mut sealed_entries: Vec<(Entry, Digest32)> = Vec::new();
        for job in &jobs {
            // Changes run in a savepoint so that one job's failure (a conflict, say)
            // leaves the others in the batch intact; audit-only jobs cannot fail
            // here and skip the round trips.
            let outcome = if job.changes.is_empty() {
                Ok(Receipt::default())
            } else {
                match exec(&mut self.conn, "SAVEPOINT job").await {
                    Ok(()) => match self.apply(job).await {
                        Ok(r) => exec(&mut self.conn, "RELEASE job").await.map(|()| r),
                        Err(e) => {
                            let _ = exec(&mut self.conn, "ROLLBACK TO job").await;
                            let _ = exec(&mut self.conn, "RELEASE job").await;
                            Err(e)
                        }
                    },
                    Err(e) => Err(e),
                }
            };
            match outcome {
                Ok(mut receipt) => {
                    for draft in &job.audit {
                        let index = base + sealed_entries.len() as u64;
                        let entry = draft.clone().seal(index, now_ms);
                        let digest = entry.digest();
                        receipt.audit_indices.push(index);
                        sealed_entries.push((entry, digest));
                    }
                    results.push(Ok(receipt));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let inserted = self.insert_entries(&sealed_entries).await;
        pending.extend(sealed_entries.iter().map(|(_, d)| *d));
        let sealed = match inserted {
            Ok(()) => self.seal(&mut log, &pending, now_ms).await,
            Err(e) => Err(e),
        };
        let committed = match sealed {
            Ok(head) => exec(&mut self.conn, "COMMIT").await.map(|()| head),
            Err(e) => Err(e),
        };
        match committed {
            Ok(head) => {
                if let Some(h) = head {
                    if let Ok(mut slot) = self.head.lock() {
                        *slot = Some(h.clone());
                    }
                    for r in results.iter_mut().flatten() {
                        if !r.audit_indices.is_empty() {
                            r.checkpoint_size = h.size;
                        }
                    }
                }
                drop(log);
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit batch commit failed; rolling back");
                let _ = exec(&mut self.conn, "ROLLBACK").await;
                // The in-memory tree may hold digests that were never committed.
                match load_tree(
                    &mut self.conn,
                    &self.verifier,
                    &self.audit.origin,
                    &self.path,
                )
                .await
                {
                    Ok((tree, head)) => {
                        log.tree = tree;
                        if let Ok(mut slot) = self.head.lock() {
                            *slot = head;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reloading the audit tree failed"),
                }
                drop(log);
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Checkpoint(msg.clone())));
                }
            }
        }
    }

    /// Pushes the batch's digests into the tree and writes the signed checkpoint.
    async fn seal(
        &mut self,
        log: &mut LogState,
        pending: &[Digest32],
        now_ms: i64,
    ) -> Result<Option<AuditHead>, StoreError> {
        if pending.is_empty() {
            return Ok(None);
        }
        for d in pending {
            log.tree.push(*d);
        }
        let cp = Checkpoint {
            origin: self.audit.origin.clone(),
            size: log.tree.len(),
            root: log.tree.root(),
        };
        let note = sign_checkpoint(&cp, &self.audit.key_name, &*self.audit.signer)
            .map_err(|e| StoreError::Checkpoint(e.to_string()))?;
        sqlx::query("INSERT INTO audit_checkpoints (size, note, time_ms) VALUES (?, ?, ?)")
            .bind(i64::try_from(cp.size).unwrap_or(i64::MAX))
            .bind(&note)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await?;
        Ok(Some(AuditHead {
            size: cp.size,
            note,
        }))
    }

    async fn apply(&mut self, job: &Job) -> Result<Receipt, StoreError> {
        let mut receipt = Receipt::default();
        for change in &job.changes {
            if let Some(v) = self.apply_change(change).await? {
                receipt.counters.push(v);
            }
        }
        Ok(receipt)
    }

    /// Inserts the batch's audit entries, many rows per statement.
    async fn insert_entries(&mut self, entries: &[(Entry, Digest32)]) -> Result<(), StoreError> {
        // 8 parameters a row; SQLite allows 32766 per statement.
        for chunk in entries.chunks(256) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_entries (seq, time_ms, actor, action, subject, outcome, detail, digest) ",
            );
            qb.push_values(chunk, |mut b, (e, d)| {
                b.push_bind(i64::try_from(e.index).unwrap_or(i64::MAX))
                    .push_bind(e.time_ms)
                    .push_bind(e.actor.clone())
                    .push_bind(e.action.clone())
                    .push_bind(e.subject.clone())
                    .push_bind(e.outcome.clone())
                    .push_bind(e.detail.clone())
                    .push_bind(d.to_vec());
            });
            qb.build().execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn apply_change(&mut self, change: &Change) -> Result<Option<i64>, StoreError> {
        let c = &mut self.conn;
        match change {
            Change::InsertModel(m) => {
                sqlx::query(
                    "INSERT INTO models (id, description, cert_validity_days, created_ms, policy_version,
                       approval_required, allowed_key_types, attestation, supplier,
                       support_until_ms, security_update_days)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(m.id.as_str())
                .bind(&m.description)
                .bind(m.cert_validity_days)
                .bind(m.created_ms)
                .bind(m.policy_version)
                .bind(i64::from(m.approval_required))
                .bind(m.allowed_key_types.join(","))
                .bind(&m.attestation)
                .bind(m.supplier.as_ref().map(|s| s.as_str()))
                .bind(m.support_until_ms)
                .bind(m.security_update_days)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "model", m.id.as_str()))?;
            }
            Change::InsertDevice(d) => {
                let o = &d.onboarding;
                sqlx::query(
                    "INSERT INTO devices (id, model_id, state, hardware_serial, created_ms, updated_ms,
                       supplier, batch_id, birth_cert_sha256, enrolled_key_sha256, attached_policy)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(d.id.as_str())
                .bind(d.model.as_str())
                .bind(d.state.as_str())
                .bind(&d.hardware_serial)
                .bind(d.created_ms)
                .bind(d.updated_ms)
                .bind(o.supplier.as_ref().map(|s| s.as_str().to_owned()))
                .bind(&o.batch_id)
                .bind(&o.birth_cert_sha256)
                .bind(&o.enrolled_key_sha256)
                .bind(&o.attached_policy)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "device", d.id.as_str()))?;
            }
            Change::SetDeviceState {
                id,
                expected,
                to,
                at_ms,
            } => {
                let done = sqlx::query(
                    "UPDATE devices SET state = ?, updated_ms = ? WHERE id = ? AND state = ?",
                )
                .bind(to.as_str())
                .bind(at_ms)
                .bind(id.as_str())
                .bind(expected.as_str())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict(
                        "device",
                        id.as_str(),
                        &format!("is no longer {expected}; retry"),
                    ));
                }
            }
            Change::RequireDeviceState { id, allowed } => {
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM devices WHERE id = ?")
                        .bind(id.as_str())
                        .fetch_all(&mut *c)
                        .await?
                        .into_iter()
                        .next();
                let Some(state) = state else {
                    return Err(StoreError::NotFound {
                        what: "device",
                        key: id.to_string(),
                    });
                };
                if !allowed.iter().any(|a| a.as_str() == state) {
                    return Err(conflict("device", id.as_str(), &format!("is {state}")));
                }
            }
            Change::AdvanceDeviceState {
                id,
                from,
                to,
                at_ms,
            } => {
                sqlx::query(
                    "UPDATE devices SET state = ?, updated_ms = ? WHERE id = ? AND state = ?",
                )
                .bind(to.as_str())
                .bind(at_ms)
                .bind(id.as_str())
                .bind(from.as_str())
                .execute(&mut *c)
                .await?;
            }
            Change::InsertCertificate(r) => {
                sqlx::query(
                    "INSERT INTO certificates (serial, profile, subject, device_id, not_before_ms, not_after_ms,
                       status, revoked_ms, reason, der, issued_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.serial)
                .bind(&r.profile)
                .bind(&r.subject)
                .bind(r.device.as_ref().map(|d| d.as_str().to_owned()))
                .bind(r.not_before_ms)
                .bind(r.not_after_ms)
                .bind(r.status.as_str())
                .bind(r.revoked_ms)
                .bind(&r.reason)
                .bind(&r.der)
                .bind(r.issued_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "certificate", &r.serial))?;
            }
            Change::RevokeCertificate {
                serial,
                reason,
                at_ms,
            } => {
                let done = sqlx::query(
                    "UPDATE certificates SET status = 'revoked', revoked_ms = ?, reason = ?
                     WHERE serial = ? AND status = 'valid'",
                )
                .bind(at_ms)
                .bind(reason)
                .bind(serial)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict(
                        "certificate",
                        serial,
                        "is unknown or already revoked",
                    ));
                }
            }
            Change::InsertToken(t) => {
                sqlx::query(
                    "INSERT INTO tokens (id, operator, role, secret_hash, created_ms, expires_ms, revoked_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&t.id)
                .bind(t.operator.as_str())
                .bind(t.role.as_str())
                .bind(&t.secret_hash[..])
                .bind(t.created_ms)
                .bind(t.expires_ms)
                .bind(t.revoked_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "token", &t.id))?;
            }
            Change::RevokeToken { id, at_ms } => {
                let done = sqlx::query(
                    "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                )
                .bind(at_ms)
                .bind(id)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict("token", id, "is unknown or already revoked"));
                }
            }
            Change::InsertSupplier(r) => {
                sqlx::query(
                    "INSERT INTO suppliers (name, ca_der, ca_sha256, created_ms) VALUES (?, ?, ?, ?)",
                )
                .bind(r.name.as_str())
                .bind(&r.ca_der)
                .bind(&r.ca_sha256)
                .bind(r.created_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "supplier", r.name.as_str()))?;
            }
            Change::InsertBatch(b) => {
                sqlx::query(
                    "INSERT INTO batches (id, supplier, model_id, device_count, imported_ms) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&b.id)
                .bind(b.supplier.as_str())
                .bind(b.model.as_str())
                .bind(b.device_count)
                .bind(b.imported_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "batch", &b.id))?;
            }
            Change::InsertEnrollmentToken(t) => {
                sqlx::query(
                    "INSERT INTO enrollment_tokens (id, model_id, secret_hash, created_ms, expires_ms)
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&t.id)
                .bind(t.model.as_str())
                .bind(&t.secret_hash[..])
                .bind(t.created_ms)
                .bind(t.expires_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "enrolment token", &t.id))?;
            }
            Change::ConsumeEnrollmentToken { id, device, at_ms } => {
                let done = sqlx::query(
                    "UPDATE enrollment_tokens SET used_ms = ?, used_device = ?
                     WHERE id = ? AND used_ms IS NULL AND expires_ms > ?",
                )
                .bind(at_ms)
                .bind(device.as_str())
                .bind(id)
                .bind(at_ms)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict(
                        "enrolment token",
                        id,
                        "is unknown, already used or expired",
                    ));
                }
            }
            Change::RecordEnrollment {
                id,
                key_sha256,
                attached_policy,
                at_ms,
            } => {
                sqlx::query(
                    "UPDATE devices SET enrolled_key_sha256 = ?, attached_policy = ?, updated_ms = ?
                     WHERE id = ?",
                )
                .bind(key_sha256)
                .bind(attached_policy)
                .bind(at_ms)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
            }
            Change::InsertTpmVendor(v) => {
                sqlx::query(
                    "INSERT INTO tpm_vendors (sha256, subject, ca_der, created_ms) VALUES (?, ?, ?, ?)",
                )
                .bind(&v.sha256)
                .bind(&v.subject)
                .bind(&v.ca_der)
                .bind(v.created_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "TPM vendor CA", &v.subject))?;
            }
            Change::InsertFirmware(f) => {
                sqlx::query(
                    "INSERT INTO model_firmware (model_id, version, sha256, created_ms) VALUES (?, ?, ?, ?)",
                )
                .bind(f.model.as_str())
                .bind(&f.version)
                .bind(&f.sha256)
                .bind(f.created_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "firmware", &format!("{} {}", f.model, f.version)))?;
            }
            Change::SetAssignment {
                device,
                counter,
                signed,
                at_ms,
            } => {
                let counter = i64::try_from(*counter)
                    .map_err(|_| conflict("assignment", device.as_str(), "counter out of range"))?;
                let done = sqlx::query(
                    "INSERT INTO device_assignments (device_id, counter, signed, created_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(device_id) DO UPDATE SET counter = ?2, signed = ?3, created_ms = ?4
                     WHERE device_assignments.counter < ?2",
                )
                .bind(device.as_str())
                .bind(counter)
                .bind(signed)
                .bind(at_ms)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict(
                        "assignment",
                        device.as_str(),
                        "the counter did not increase",
                    ));
                }
            }
            Change::RecordUpdate(u) => {
                let counter = i64::try_from(u.counter)
                    .map_err(|_| conflict("update", u.device.as_str(), "counter out of range"))?;
                sqlx::query(
                    "INSERT INTO device_updates (device_id, counter, target, state, detail, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(device_id) DO UPDATE SET counter = ?2, target = ?3, state = ?4,
                        detail = ?5, updated_ms = ?6
                     WHERE device_updates.counter <= ?2",
                )
                .bind(u.device.as_str())
                .bind(counter)
                .bind(&u.target)
                .bind(&u.state)
                .bind(&u.detail)
                .bind(u.updated_ms)
                .execute(&mut *c)
                .await?;
            }
            Change::SetModelPolicy(p) => {
                sqlx::query(
                    "INSERT INTO model_policies (model_id, mud_url, mud, policy, signed_by, open_override, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(model_id) DO UPDATE SET mud_url = ?2, mud = ?3, policy = ?4,
                        signed_by = ?5, open_override = ?6, updated_ms = ?7",
                )
                .bind(p.model.as_str())
                .bind(&p.mud_url)
                .bind(&p.mud)
                .bind(&p.policy)
                .bind(&p.signed_by)
                .bind(i64::from(p.open_override))
                .bind(p.updated_ms)
                .execute(&mut *c)
                .await?;
            }
            Change::UpsertSite(s) => {
                sqlx::query(
                    "INSERT INTO sites (name, spec, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET spec = ?2, updated_ms = ?4",
                )
                .bind(s.name.as_str())
                .bind(&s.spec)
                .bind(s.created_ms)
                .bind(s.updated_ms)
                .execute(&mut *c)
                .await?;
            }
            Change::SetPlacement(p) => {
                sqlx::query(
                    "INSERT INTO device_placements (device_id, site, segment, address, overrides, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(device_id) DO UPDATE SET site = ?2, segment = ?3, address = ?4,
                        overrides = ?5, updated_ms = ?6",
                )
                .bind(p.device.as_str())
                .bind(p.site.as_str())
                .bind(&p.segment)
                .bind(&p.address)
                .bind(&p.overrides)
                .bind(p.updated_ms)
                .execute(&mut *c)
                .await?;
            }
            Change::SetEdge {
                device,
                site,
                at_ms,
            } => {
                sqlx::query(
                    "INSERT INTO site_edges (device_id, site, applied_version, status, updated_ms)
                     VALUES (?1, ?2, 0, '{}', ?3)
                     ON CONFLICT(device_id) DO UPDATE SET site = ?2, updated_ms = ?3",
                )
                .bind(device.as_str())
                .bind(site.as_str())
                .bind(at_ms)
                .execute(&mut *c)
                .await?;
            }
            Change::RecordEdgeStatus {
                device,
                applied_version,
                status,
                at_ms,
            } => {
                let v = i64::try_from(*applied_version)
                    .map_err(|_| conflict("edge", device.as_str(), "version out of range"))?;
                sqlx::query(
                    "UPDATE site_edges SET applied_version = ?, status = ?, updated_ms = ? WHERE device_id = ?",
                )
                .bind(v)
                .bind(status)
                .bind(at_ms)
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
            }
            Change::SetDeviceTags { device, tags } => {
                sqlx::query("DELETE FROM device_tags WHERE device_id = ?")
                    .bind(device.as_str())
                    .execute(&mut *c)
                    .await?;
                for t in tags {
                    sqlx::query("INSERT OR IGNORE INTO device_tags (device_id, tag) VALUES (?, ?)")
                        .bind(device.as_str())
                        .bind(t.as_str())
                        .execute(&mut *c)
                        .await?;
                }
            }
            Change::InsertRollout(r) => {
                sqlx::query(
                    "INSERT INTO rollouts (name, model_id, release_version, spec, state, wave, reason,
                        created_by, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(r.name.as_str())
                .bind(r.model.as_str())
                .bind(&r.release_version)
                .bind(&r.spec)
                .bind(&r.state)
                .bind(i64::from(r.wave))
                .bind(&r.reason)
                .bind(&r.created_by)
                .bind(r.created_ms)
                .bind(r.updated_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "rollout", r.name.as_str()))?;
            }
            Change::SetRolloutState {
                name,
                state,
                wave,
                reason,
                at_ms,
            } => {
                let done = sqlx::query(
                    "UPDATE rollouts SET state = ?, wave = ?, reason = ?, updated_ms = ? WHERE name = ?",
                )
                .bind(state)
                .bind(i64::from(*wave))
                .bind(reason)
                .bind(at_ms)
                .bind(name.as_str())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::NotFound {
                        what: "rollout",
                        key: name.to_string(),
                    });
                }
            }
            Change::UpsertRolloutDevices(list) => {
                for d in list {
                    let counter = i64::try_from(d.counter).map_err(|_| {
                        conflict("rollout", d.device.as_str(), "counter out of range")
                    })?;
                    sqlx::query(
                        "INSERT INTO rollout_devices (rollout, device_id, wave, state, counter, detail, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT(rollout, device_id) DO UPDATE SET wave = ?3, state = ?4,
                            counter = ?5, detail = ?6, updated_ms = ?7",
                    )
                    .bind(d.rollout.as_str())
                    .bind(d.device.as_str())
                    .bind(i64::from(d.wave))
                    .bind(&d.state)
                    .bind(counter)
                    .bind(&d.detail)
                    .bind(d.updated_ms)
                    .execute(&mut *c)
                    .await?;
                }
            }
            Change::InsertSupplierKey(k) => {
                sqlx::query(
                    "INSERT INTO supplier_keys (keyid, supplier, spki_der, created_ms) VALUES (?, ?, ?, ?)",
                )
                .bind(&k.keyid)
                .bind(k.supplier.as_str())
                .bind(&k.spki_der)
                .bind(k.created_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "supplier key", &k.keyid))?;
            }
            Change::InsertRelease(r) => {
                let floor: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(security_version) FROM releases WHERE model_id = ?",
                )
                .bind(r.model.as_str())
                .fetch_one(&mut *c)
                .await?;
                let sv = i64::try_from(r.security_version).map_err(|_| {
                    conflict("release", &r.version, "security version is out of range")
                })?;
                if floor.is_some_and(|f| sv < f) {
                    return Err(conflict(
                        "release",
                        &r.version,
                        "its security version is below an earlier release's: the anti-rollback floor never goes down",
                    ));
                }
                sqlx::query(
                    "INSERT INTO releases (model_id, version, security_version, hardware, image_sha256,
                       image_len, sbom_sha256, provenance_sha256, signed_by, builder_id, uploaded_by, created_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(r.model.as_str())
                .bind(&r.version)
                .bind(sv)
                .bind(r.hardware.join(","))
                .bind(&r.image_sha256)
                .bind(i64::try_from(r.image_len).unwrap_or(i64::MAX))
                .bind(&r.sbom_sha256)
                .bind(&r.provenance_sha256)
                .bind(&r.signed_by)
                .bind(&r.builder_id)
                .bind(&r.uploaded_by)
                .bind(r.created_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "release", &format!("{} {}", r.model, r.version)))?;
            }
            Change::RecordKeyProtection {
                id,
                key_protection,
                ak_public,
                ek_sha256,
            } => {
                sqlx::query(
                    "UPDATE devices SET key_protection = ?, ak_public = ?, ek_sha256 = ? WHERE id = ?",
                )
                .bind(key_protection)
                .bind(ak_public)
                .bind(ek_sha256)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
            }
            Change::RecordAttestation {
                id,
                status,
                detail,
                at_ms,
            } => {
                sqlx::query(
                    "UPDATE devices SET attestation_status = ?, attestation_detail = ?, attested_ms = ?
                     WHERE id = ?",
                )
                .bind(status)
                .bind(detail)
                .bind(at_ms)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
            }
            Change::MarkPending { id, at_ms } => {
                sqlx::query(
                    "UPDATE devices SET pending_since_ms = COALESCE(pending_since_ms, ?) WHERE id = ?",
                )
                .bind(at_ms)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
            }
            Change::ApproveDevice { id, at_ms } => {
                let done = sqlx::query(
                    "UPDATE devices SET approved_ms = ?, updated_ms = ? WHERE id = ? AND approved_ms IS NULL",
                )
                .bind(at_ms)
                .bind(at_ms)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict(
                        "device",
                        id.as_str(),
                        "is unknown or already approved",
                    ));
                }
            }
            Change::InsertCommand(cmd) => {
                sqlx::query(
                    "INSERT INTO commands (id, device_id, name, args, status, created_ms) VALUES (?, ?, ?, ?, 'queued', ?)",
                )
                .bind(&cmd.id)
                .bind(cmd.device.as_str())
                .bind(&cmd.name)
                .bind(&cmd.args)
                .bind(cmd.created_ms)
                .execute(&mut *c)
                .await
                .map_err(|e| map_unique(e, "command", &cmd.id))?;
            }
            Change::CommandSent { id, at_ms } => {
                sqlx::query(
                    "UPDATE commands SET status = 'sent', sent_ms = ? WHERE id = ? AND status = 'queued'",
                )
                .bind(at_ms)
                .bind(id)
                .execute(&mut *c)
                .await?;
            }
            Change::CommandAcked {
                id,
                device,
                ok,
                result,
                at_ms,
            } => {
                let done = sqlx::query(
                    "UPDATE commands SET status = ?, acked_ms = ?, result = ?
                     WHERE id = ? AND device_id = ? AND status IN ('queued','sent')",
                )
                .bind(if *ok { "acked" } else { "failed" })
                .bind(at_ms)
                .bind(result)
                .bind(id)
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(conflict(
                        "command",
                        id,
                        "is unknown, not this device's, or already acknowledged",
                    ));
                }
            }
            Change::OpenAlert(a) => {
                sqlx::query(
                    "INSERT INTO alerts (id, dedup_key, detector, severity, device_id, peer, state,
                       summary, evidence, last_evidence, count, first_ms, last_ms, note, responses)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&a.id)
                .bind(&a.dedup_key)
                .bind(&a.detector)
                .bind(&a.severity)
                .bind(&a.device)
                .bind(&a.peer)
                .bind(&a.state)
                .bind(&a.summary)
                .bind(&a.evidence)
                .bind(&a.last_evidence)
                .bind(i64::try_from(a.count).unwrap_or(i64::MAX))
                .bind(a.first_ms)
                .bind(a.last_ms)
                .bind(&a.note)
                .bind(&a.responses)
                .execute(&mut *c)
                .await?;
            }
            Change::BumpAlert {
                id,
                count,
                last_ms,
                last_evidence,
            } => {
                sqlx::query(
                    "UPDATE alerts SET count = count + ?, last_ms = MAX(last_ms, ?), last_evidence = ?
                     WHERE id = ?",
                )
                .bind(i64::try_from(*count).unwrap_or(i64::MAX))
                .bind(last_ms)
                .bind(last_evidence)
                .bind(id)
                .execute(&mut *c)
                .await?;
            }
            Change::SetAlertState {
                id,
                from,
                to,
                by,
                at_ms,
                note,
            } => {
                let current: Option<String> =
                    sqlx::query_scalar("SELECT state FROM alerts WHERE id = ?")
                        .bind(id)
                        .fetch_optional(&mut *c)
                        .await?;
                let Some(current) = current else {
                    return Err(StoreError::NotFound {
                        what: "alert",
                        key: id.clone(),
                    });
                };
                if !from.contains(&current) {
                    return Err(StoreError::Conflict {
                        what: "alert",
                        key: id.clone(),
                        reason: format!("it is {current}, it cannot become {to}"),
                    });
                }
                let sql = if to == "resolved" {
                    "UPDATE alerts SET state = ?, resolved_by = ?, resolved_ms = ?,
                       note = CASE WHEN ?4 = '' THEN note WHEN note = '' THEN ?4 ELSE note || char(10) || ?4 END
                     WHERE id = ?5"
                } else {
                    "UPDATE alerts SET state = ?, acked_by = ?, acked_ms = ?,
                       note = CASE WHEN ?4 = '' THEN note WHEN note = '' THEN ?4 ELSE note || char(10) || ?4 END
                     WHERE id = ?5"
                };
                sqlx::query(sql)
                    .bind(to)
                    .bind(by)
                    .bind(at_ms)
                    .bind(note)
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
            }
            Change::SetAlertResponses { id, responses } => {
                sqlx::query("UPDATE alerts SET responses = ? WHERE id = ?")
                    .bind(responses)
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
            }
            Change::RecordDeviceEvents(list) => {
                for e in list {
                    sqlx::query(
                        "INSERT INTO device_events (device_id, at_ms, kind, summary, detail)
                         VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(&e.device)
                    .bind(e.at_ms)
                    .bind(&e.kind)
                    .bind(&e.summary)
                    .bind(&e.detail)
                    .execute(&mut *c)
                    .await?;
                }
            }
            Change::PruneMonitoring { before_ms } => {
                sqlx::query("DELETE FROM device_events WHERE at_ms < ?")
                    .bind(before_ms)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("DELETE FROM alerts WHERE state = 'resolved' AND last_ms < ?")
                    .bind(before_ms)
                    .execute(&mut *c)
                    .await?;
            }
            Change::RecordPresence(list) => {
                for (id, seen, firmware) in list {
                    sqlx::query(
                        "UPDATE devices SET last_seen_ms = MAX(COALESCE(last_seen_ms, 0), ?),
                           reported_firmware = COALESCE(?, reported_firmware) WHERE id = ?",
                    )
                    .bind(seen)
                    .bind(firmware)
                    .bind(id.as_str())
                    .execute(&mut *c)
                    .await?;
                }
            }
            Change::BumpCounter { name } => {
                let v: i64 = sqlx::query_scalar(
                    "INSERT INTO counters (name, value) VALUES (?, 1)
                     ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
                )
                .bind(name)
                .fetch_one(&mut *c)
                .await?;
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(
        &self,
        changes: Vec<Change>,
        audit: Vec<EntryDraft>,
    ) -> Result<Receipt, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                changes,
                audit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn model(&self, id: &ModelId) -> Result<Option<ModelRecord>, StoreError> {
        self.one(
            "SELECT * FROM models WHERE id = ?",
            id.as_str(),
            model_from_row,
        )
        .await
    }

    async fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        self.all("SELECT * FROM models ORDER BY id", model_from_row)
            .await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.one(
            "SELECT * FROM devices WHERE id = ?",
            id.as_str(),
            device_from_row,
        )
        .await
    }

    async fn devices(&self, f: &DeviceFilter) -> Result<Vec<DeviceRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM devices WHERE (?1 IS NULL OR model_id = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id LIMIT ?3",
        )
        .bind(f.model.as_ref().map(|m| m.as_str().to_owned()))
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.limit.unwrap_or(DEFAULT_LIMIT))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(device_from_row)
        .collect()
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertRecord>, StoreError> {
        self.one(
            "SELECT * FROM certificates WHERE serial = ?",
            serial,
            cert_from_row,
        )
        .await
    }

    async fn certificates(&self, f: &CertFilter) -> Result<Vec<CertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM certificates WHERE (?1 IS NULL OR device_id = ?1) AND (?2 IS NULL OR status = ?2)
             ORDER BY issued_ms, serial LIMIT ?3",
        )
        .bind(f.device.as_ref().map(|d| d.as_str().to_owned()))
        .bind(f.status.map(|s| s.as_str()))
        .bind(f.limit.unwrap_or(DEFAULT_LIMIT))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(cert_from_row)
        .collect()
    }

    async fn revoked_unexpired(&self, now_ms: i64) -> Result<Vec<CertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM certificates WHERE status = 'revoked' AND not_after_ms > ? ORDER BY serial",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(cert_from_row)
        .collect()
    }

    async fn supplier(&self, name: &SupplierName) -> Result<Option<SupplierRecord>, StoreError> {
        self.one(
            "SELECT * FROM suppliers WHERE name = ?",
            name.as_str(),
            supplier_from_row,
        )
        .await
    }

    async fn suppliers(&self) -> Result<Vec<SupplierRecord>, StoreError> {
        self.all("SELECT * FROM suppliers ORDER BY name", supplier_from_row)
            .await
    }

    async fn tpm_vendors(&self) -> Result<Vec<TpmVendorRecord>, StoreError> {
        self.all(
            "SELECT * FROM tpm_vendors ORDER BY created_ms",
            tpm_vendor_from_row,
        )
        .await
    }

    async fn supplier_keys(
        &self,
        supplier: &SupplierName,
    ) -> Result<Vec<SupplierKeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM supplier_keys WHERE supplier = ? ORDER BY created_ms")
            .bind(supplier.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(supplier_key_from_row)
            .collect()
    }

    async fn assignment(&self, device: &DeviceId) -> Result<Option<(u64, String)>, StoreError> {
        let row = sqlx::query("SELECT counter, signed FROM device_assignments WHERE device_id = ?")
            .bind(device.as_str())
            .fetch_all(self.pool())
            .await?;
        row.first()
            .map(|r| {
                Ok((
                    u64::try_from(r.try_get::<i64, _>("counter")?).unwrap_or(0),
                    r.try_get("signed")?,
                ))
            })
            .transpose()
    }

    async fn model_policy(&self, model: &ModelId) -> Result<Option<ModelPolicyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM model_policies WHERE model_id = ?")
            .bind(model.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.first()
            .map(|r| {
                Ok(ModelPolicyRecord {
                    model: model.clone(),
                    mud_url: r.try_get("mud_url")?,
                    mud: r.try_get("mud")?,
                    policy: r.try_get("policy")?,
                    signed_by: r.try_get("signed_by")?,
                    open_override: r.try_get::<i64, _>("open_override")? != 0,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .transpose()
    }

    async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        sqlx::query("SELECT * FROM sites ORDER BY name")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(SiteRecord {
                    name: SiteName::parse(r.try_get("name")?).map_err(|e| corrupt("site", e))?,
                    spec: r.try_get("spec")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    async fn placements(
        &self,
        site: Option<&SiteName>,
    ) -> Result<Vec<PlacementRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM device_placements WHERE ?1 IS NULL OR site = ?1 ORDER BY device_id",
        )
        .bind(site.map(SiteName::as_str))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(PlacementRecord {
                device: DeviceId::parse(r.try_get("device_id")?)
                    .map_err(|e| corrupt("placement", e))?,
                site: SiteName::parse(r.try_get("site")?).map_err(|e| corrupt("placement", e))?,
                segment: r.try_get("segment")?,
                address: r.try_get("address")?,
                overrides: r.try_get("overrides")?,
                updated_ms: r.try_get("updated_ms")?,
            })
        })
        .collect()
    }

    async fn edges(&self, site: Option<&SiteName>) -> Result<Vec<EdgeRecord>, StoreError> {
        sqlx::query("SELECT * FROM site_edges WHERE ?1 IS NULL OR site = ?1 ORDER BY device_id")
            .bind(site.map(SiteName::as_str))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(EdgeRecord {
                    device: DeviceId::parse(r.try_get("device_id")?)
                        .map_err(|e| corrupt("edge", e))?,
                    site: SiteName::parse(r.try_get("site")?).map_err(|e| corrupt("edge", e))?,
                    applied_version: u64::try_from(r.try_get::<i64, _>("applied_version")?)
                        .map_err(|e| corrupt("edge", e))?,
                    status: r.try_get("status")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        sqlx::query("SELECT * FROM rollouts ORDER BY created_ms DESC, name")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(RolloutRecord {
                    name: RolloutName::parse(r.try_get("name")?)
                        .map_err(|e| corrupt("rollout", e))?,
                    model: ModelId::parse(r.try_get("model_id")?)
                        .map_err(|e| corrupt("rollout", e))?,
                    release_version: r.try_get("release_version")?,
                    spec: r.try_get("spec")?,
                    state: r.try_get("state")?,
                    wave: u32::try_from(r.try_get::<i64, _>("wave")?)
                        .map_err(|e| corrupt("rollout", e))?,
                    reason: r.try_get("reason")?,
                    created_by: r.try_get("created_by")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    async fn rollout_devices(
        &self,
        name: &RolloutName,
    ) -> Result<Vec<RolloutDeviceRecord>, StoreError> {
        sqlx::query("SELECT * FROM rollout_devices WHERE rollout = ? ORDER BY wave, device_id")
            .bind(name.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(RolloutDeviceRecord {
                    rollout: name.clone(),
                    device: DeviceId::parse(r.try_get("device_id")?)
                        .map_err(|e| corrupt("rollout device", e))?,
                    wave: u32::try_from(r.try_get::<i64, _>("wave")?)
                        .map_err(|e| corrupt("rollout device", e))?,
                    state: r.try_get("state")?,
                    counter: u64::try_from(r.try_get::<i64, _>("counter")?)
                        .map_err(|e| corrupt("rollout device", e))?,
                    detail: r.try_get("detail")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    async fn device_tags(&self, device: &DeviceId) -> Result<Vec<Tag>, StoreError> {
        sqlx::query("SELECT tag FROM device_tags WHERE device_id = ? ORDER BY tag")
            .bind(device.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Tag::parse(r.try_get("tag")?).map_err(|e| corrupt("device tag", e)))
            .collect()
    }

    async fn devices_tagged(&self, tags: &[Tag]) -> Result<Vec<DeviceId>, StoreError> {
        if tags.is_empty() {
            return Ok(vec![]);
        }
        let list = serde_json::to_string(&tags.iter().map(Tag::as_str).collect::<Vec<_>>())
            .map_err(|e| corrupt("device tag", e))?;
        sqlx::query(
            "SELECT device_id FROM device_tags WHERE tag IN (SELECT value FROM json_each(?1))
             GROUP BY device_id HAVING COUNT(DISTINCT tag) = json_array_length(?1) ORDER BY device_id",
        )
        .bind(list)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| DeviceId::parse(r.try_get("device_id")?).map_err(|e| corrupt("device tag", e)))
        .collect()
    }

    async fn updates(&self, device: Option<&DeviceId>) -> Result<Vec<UpdateRecord>, StoreError> {
        sqlx::query(
            "SELECT device_id, counter, target, state, detail, updated_ms FROM device_updates
             WHERE ?1 IS NULL OR device_id = ?1 ORDER BY device_id",
        )
        .bind(device.map(DeviceId::as_str))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(UpdateRecord {
                device: DeviceId::parse(r.try_get("device_id")?)
                    .map_err(|e| corrupt("update", e))?,
                counter: u64::try_from(r.try_get::<i64, _>("counter")?)
                    .map_err(|e| corrupt("update", e))?,
                target: r.try_get("target")?,
                state: r.try_get("state")?,
                detail: r.try_get("detail")?,
                updated_ms: r.try_get("updated_ms")?,
            })
        })
        .collect()
    }

    async fn releases(&self, model: Option<&ModelId>) -> Result<Vec<ReleaseRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM releases WHERE (?1 IS NULL OR model_id = ?1)
             ORDER BY model_id, security_version, created_ms",
        )
        .bind(model.map(|m| m.as_str()))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(release_from_row)
        .collect()
    }

    async fn firmware(&self, model: &ModelId) -> Result<Vec<FirmwareRecord>, StoreError> {
        sqlx::query("SELECT * FROM model_firmware WHERE model_id = ? ORDER BY created_ms")
            .bind(model.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(firmware_from_row)
            .collect()
    }

    async fn device_by_birth_cert(&self, sha256: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.one(
            "SELECT * FROM devices WHERE birth_cert_sha256 = ?",
            sha256,
            device_from_row,
        )
        .await
    }

    async fn enrollment_token(
        &self,
        id: &str,
    ) -> Result<Option<EnrollmentTokenRecord>, StoreError> {
        self.one(
            "SELECT * FROM enrollment_tokens WHERE id = ?",
            id,
            enrollment_token_from_row,
        )
        .await
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM batches WHERE id = ?")
            .bind(id)
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .next();
        row.map(|r| {
            Ok(BatchRecord {
                id: r.try_get("id")?,
                supplier: SupplierName::parse(r.try_get("supplier")?)
                    .map_err(|e| corrupt("batch", e))?,
                model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("batch", e))?,
                device_count: r.try_get("device_count")?,
                imported_ms: r.try_get("imported_ms")?,
            })
        })
        .transpose()
    }

    async fn commands(
        &self,
        device: &DeviceId,
        queued_only: bool,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM commands WHERE device_id = ? AND (? = 0 OR status = 'queued')
             ORDER BY created_ms DESC, id LIMIT 500",
        )
        .bind(device.as_str())
        .bind(i64::from(queued_only))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(command_from_row)
        .collect()
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.one("SELECT * FROM tokens WHERE id = ?", id, token_from_row)
            .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all(
            "SELECT * FROM tokens ORDER BY created_ms, id",
            token_from_row,
        )
        .await
    }

    async fn audit_entries(&self, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        self.reader.audit_entries(from, limit).await
    }

    async fn audit_checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.reader.audit_checkpoints(from_size, limit).await
    }

    fn audit_head(&self) -> Option<AuditHead> {
        self.head.lock().ok().and_then(|h| h.clone())
    }

    async fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, StoreError> {
        let (path, head) = {
            let log = self.log.read().await;
            let head = self.audit_head().ok_or(StoreError::NotFound {
                what: "audit entry",
                key: index.to_string(),
            })?;
            (log.tree.inclusion_proof(index)?, head)
        };
        let entry = self
            .reader
            .audit_entries(index, 1)
            .await?
            .into_iter()
            .find(|e| e.entry.index == index)
            .ok_or(StoreError::NotFound {
                what: "audit entry",
                key: index.to_string(),
            })?;
        Ok(InclusionProof { entry, path, head })
    }

    async fn alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM alerts WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR device_id = ?2)
               AND (?3 IS NULL OR last_ms >= ?3) ORDER BY last_ms DESC, id LIMIT ?4",
        )
        .bind(&f.state)
        .bind(&f.device)
        .bind(f.since_ms)
        .bind(f.limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(alert_from_row)
        .collect()
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query("SELECT * FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    async fn device_events(
        &self,
        device: &str,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeviceEventRecord>, StoreError> {
        sqlx::query(
            "SELECT device_id, at_ms, kind, summary, detail FROM device_events
             WHERE device_id = ? AND at_ms >= ? AND at_ms <= ? ORDER BY at_ms, id LIMIT ?",
        )
        .bind(device)
        .bind(since_ms)
        .bind(until_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(DeviceEventRecord {
                device: r.try_get("device_id")?,
                at_ms: r.try_get("at_ms")?,
                kind: r.try_get("kind")?,
                summary: r.try_get("summary")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
    }

    async fn audit_entries_about(
        &self,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, actor, action, subject, outcome, detail, digest
             FROM audit_entries WHERE subject = ?1 OR detail LIKE ?2 ESCAPE '\\'
             ORDER BY seq LIMIT ?3",
        )
        .bind(subject)
        .bind(format!(
            "%\"device\":\"{}\"%",
            subject
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn consistency_proof(&self, old_size: u64) -> Result<ConsistencyProof, StoreError> {
        let log = self.log.read().await;
        let head = self.audit_head().ok_or(StoreError::NotFound {
            what: "audit checkpoint",
            key: old_size.to_string(),
        })?;
        Ok(ConsistencyProof {
            old_size,
            path: log.tree.consistency_proof(old_size)?,
            head,
        })
    }
}
