//! The SQLite store: WAL mode, `synchronous = FULL`, one writer task that groups
//! concurrent commits into one transaction, a small pool of read-only readers.
//!
//! In layers: [`writer`] (group commit, savepoints, the audit checkpoint),
//! [`apply`] (one module per change family), [`rows`] (row decoding) and
//! [`reads`] (the `Store` trait's reads).

mod apply;
mod reads;
mod rows;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_audit::{MerkleLog, NoteVerifier, StoredCheckpoint};
use palisade_core::{Clock, Signer};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{RwLock, mpsc};

use self::rows::entry_from_row;
use self::writer::{Job, Writer};

use crate::{AuditHead, StoreError, StoredEntry};

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

pub(super) fn base_options(path: &Path) -> SqliteConnectOptions {
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
