//! The SQL store: one implementation of [`Store`] over sqlx's `Any` driver, on
//! SQLite (the embedded default: WAL, `synchronous = FULL`) or PostgreSQL. One
//! writer task groups concurrent commits into one transaction; reads run on a
//! small pool.
//!
//! In layers: [`writer`] (group commit, savepoints, the audit checkpoint),
//! [`apply`] (one module per change family), [`rows`] (row decoding) and
//! [`reads`] (the `Store` trait's reads). The SQL is written once for both
//! engines (`$N` parameters, `ON CONFLICT` upserts, `CASE` where SQLite would
//! use two-argument `MIN`/`MAX`); the few statements that differ ask
//! [`Engine`], and PostgreSQL's migration defines the three SQLite functions
//! the reads use (`instr`, `json_each`, `json_array_length`).

mod apply;
mod reads;
mod rows;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_audit::{MerkleLog, NoteVerifier, StoredCheckpoint};
use palisade_core::{Clock, Signer};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tokio::sync::{RwLock, mpsc};

use self::rows::entry_from_row;
use self::writer::{Job, Writer};

use crate::{AuditHead, StoreError, StoredEntry};

/// Most commits grouped into one transaction.
const MAX_BATCH: usize = 512;
/// Commits waiting for the writer before callers wait for room.
const QUEUE: usize = 4096;
const DEFAULT_LIMIT: i64 = 1000;
/// The PostgreSQL advisory lock (transaction-scoped) under which a node
/// appends to the audit log or reads it whole: appends from every node form
/// one tree ("palisade" in ASCII).
const AUDIT_LOCK: i64 = 0x7061_6c69_7361_6465;

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

/// The database engine under a store: the few statements that differ ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Where the store lives: a SQLite file or a PostgreSQL URL
/// (`postgres://user:password@host:port/database?sslmode=…`).
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl Database {
    /// The engine it runs on.
    pub fn engine(&self) -> Engine {
        match self {
            Database::Sqlite(_) => Engine::Sqlite,
            Database::Postgres(_) => Engine::Postgres,
        }
    }

    /// Another database on the same PostgreSQL server, reached the same way
    /// (`None` for SQLite).
    pub fn sibling(&self, name: &str) -> Option<Database> {
        let Database::Postgres(url) = self else {
            return None;
        };
        let (base, query) = url
            .split_once('?')
            .map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let root = base.rsplit_once('/').map_or(base, |(r, _)| r);
        Some(Database::Postgres(match query {
            Some(q) => format!("{root}/{name}?{q}"),
            None => format!("{root}/{name}"),
        }))
    }

    /// The connection URL (for PostgreSQL; the path for SQLite).
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(u) => u.clone(),
        }
    }

    /// The location with any password removed: for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(url) => match url.parse::<AnyConnectOptions>() {
                Ok(o) => {
                    let mut u = o.database_url;
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    u.to_string()
                }
                Err(_) => "postgres://(unparsable URL)".into(),
            },
        }
    }

    fn options(&self, read_only: bool) -> Result<AnyConnectOptions, StoreError> {
        let url = match self {
            Database::Sqlite(path) => {
                // Absolute, so that no part of a relative path is read as a URL host.
                let path = std::path::absolute(path).map_err(|e| StoreError::Config {
                    detail: format!("database path {}: {e}", path.display()),
                })?;
                let opts = SqliteConnectOptions::new().filename(path);
                let opts = if read_only {
                    opts.read_only(true)
                } else {
                    opts.create_if_missing(true)
                };
                opts.to_url_lossy().to_string()
            }
            Database::Postgres(url) => url.clone(),
        };
        url.parse::<AnyConnectOptions>()
            .map(|o| o.disable_statement_logging())
            .map_err(|e| StoreError::Config {
                detail: format!("database URL {}: {e}", self.redacted()),
            })
    }
}

impl FromStr for Database {
    type Err = StoreError;

    /// `postgres://…` or `postgresql://…` for PostgreSQL; `sqlite://PATH`,
    /// `sqlite:PATH` or a plain path for SQLite.
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let db = Database::Postgres(s.to_owned());
            db.options(false)?;
            return Ok(db);
        }
        if let Some(rest) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            return Ok(Database::Sqlite(PathBuf::from(rest)));
        }
        if s.is_empty() || s.contains("://") {
            return Err(StoreError::Config {
                detail: format!(
                    "database {:?}: use postgres://user:password@host/database or a SQLite file path",
                    s.split('@').next_back().unwrap_or_default()
                ),
            });
        }
        Ok(Database::Sqlite(PathBuf::from(s)))
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({})", self.redacted())
    }
}

/// Connection settings (`[store]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections in the read pool (the writer has one more of its own).
    pub max_connections: u32,
    /// How long a read waits for a pooled connection, and a connection attempt
    /// for the server, before it fails.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

async fn read_pool(db: &Database, settings: PoolSettings, max: u32) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let read_only_session = db.engine() == Engine::Postgres;
    Ok(AnyPoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(settings.acquire_timeout)
        // PostgreSQL pings cost a round trip per read; a broken connection
        // fails the read and is replaced.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if read_only_session {
                    conn.execute("SET default_transaction_read_only = on")
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(db.options(true)?)
        .await?)
}

/// Read access to a Palisade database (also used offline by `audit verify --db`).
#[derive(Debug, Clone)]
pub struct SqlReader {
    pool: AnyPool,
}

impl SqlReader {
    /// Opens an existing database for reading.
    pub async fn open_read_only(db: &Database) -> Result<Self, StoreError> {
        if let Database::Sqlite(path) = db
            && !path.exists()
        {
            return Err(StoreError::NotFound {
                what: "database",
                key: path.display().to_string(),
            });
        }
        let pool = read_pool(db, PoolSettings::default(), 2).await?;
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
             FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
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
            "SELECT size, note FROM audit_checkpoints WHERE size >= $1 ORDER BY size LIMIT $2",
        )
        .bind(i64::try_from(from_size).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
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

/// The writer's connection, set up for durable commits: WAL and
/// `synchronous = FULL` on SQLite, `synchronous_commit = on` on PostgreSQL
/// (acknowledged means on the server's disk, whatever the database's default).
pub(super) async fn connect_writer(
    db: &Database,
    timeout: Duration,
) -> Result<AnyConnection, StoreError> {
    let mut conn = tokio::time::timeout(timeout, AnyConnection::connect_with(&db.options(false)?))
        .await
        .map_err(|_| StoreError::Unavailable {
            detail: format!("no answer from {} within {timeout:?}", db.redacted()),
        })?
        .map_err(|e| StoreError::Unavailable {
            detail: format!("connecting to {}: {e}", db.redacted()),
        })?;
    match db.engine() {
        Engine::Sqlite => {
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
        }
        Engine::Postgres => {
            conn.execute("SET synchronous_commit = on").await?;
        }
    }
    Ok(conn)
}

/// The Merkle tree of the committed log.
#[derive(Debug)]
struct LogState {
    tree: MerkleLog,
}

/// The store over SQL: SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlStore {
    reader: SqlReader,
    engine: Engine,
    tx: mpsc::Sender<Job>,
    log: Arc<RwLock<LogState>>,
    head: Arc<Mutex<Option<AuditHead>>>,
}

/// The embedded default's name, kept for callers that only ever open a file.
pub type SqliteStore = SqlStore;

impl SqlStore {
    /// Opens (creating and migrating if needed) the SQLite database at `path`.
    pub async fn open(
        path: &Path,
        audit: AuditConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Self::open_database(
            &Database::Sqlite(path.to_owned()),
            PoolSettings::default(),
            audit,
            clock,
        )
        .await
    }

    /// Opens (migrating if needed) the database, rebuilds the audit tree and
    /// checks it against the newest signed checkpoint, then starts the writer
    /// task. On PostgreSQL the writer holds an advisory lock: a second node
    /// writing the same database is refused until nodes share the audit tree.
    pub async fn open_database(
        db: &Database,
        settings: PoolSettings,
        audit: AuditConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = db.engine();
        let mut conn = connect_writer(db, settings.acquire_timeout).await?;
        match engine {
            Engine::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?,
            Engine::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&mut conn)
                    .await?
            }
        }
        let verifier = audit.verifier()?;
        let (tree, head) = match engine {
            Engine::Sqlite => {
                load_tree(&mut conn, &verifier, &audit.origin, &db.redacted()).await?
            }
            Engine::Postgres => {
                // Under the audit lock: no other node appends while it is read.
                conn.execute("BEGIN").await?;
                let loaded = async {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(AUDIT_LOCK)
                        .execute(&mut conn)
                        .await?;
                    load_tree(&mut conn, &verifier, &audit.origin, &db.redacted()).await
                }
                .await;
                conn.execute("COMMIT").await?;
                loaded?
            }
        };
        let pool = read_pool(db, settings, settings.max_connections).await?;
        let log = Arc::new(RwLock::new(LogState { tree }));
        let head = Arc::new(Mutex::new(head));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            conn,
            broken: false,
            db: db.clone(),
            timeout: settings.acquire_timeout,
            engine,
            rx,
            log: log.clone(),
            head: head.clone(),
            audit,
            verifier,
            clock,
            path: db.redacted(),
        };
        tokio::spawn(writer.run());
        Ok(Self {
            reader: SqlReader { pool },
            engine,
            tx,
            log,
            head,
        })
    }

    /// The engine it runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    fn pool(&self) -> &AnyPool {
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
        map: fn(&AnyRow) -> Result<T, StoreError>,
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
        map: fn(&AnyRow) -> Result<T, StoreError>,
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
    conn: &mut AnyConnection,
    verifier: &NoteVerifier,
    origin: &str,
    path: &str,
) -> Result<(MerkleLog, Option<AuditHead>), StoreError> {
    let mut tree = MerkleLog::new();
    let head = extend_tree(conn, &mut tree, verifier, origin, path, false).await?;
    Ok((tree, head))
}

/// Reads the entries after the tree's end into it, then checks that the newest
/// signed checkpoint covers exactly the result. With `only_if_newer`, a tree
/// already at the table's end is left as it is and `None` returned without
/// reading the checkpoint.
async fn extend_tree(
    conn: &mut AnyConnection,
    tree: &mut MerkleLog,
    verifier: &NoteVerifier,
    origin: &str,
    path: &str,
    only_if_newer: bool,
) -> Result<Option<AuditHead>, StoreError> {
    let damaged = |detail: String| StoreError::AuditDamaged {
        path: path.to_owned(),
        detail,
    };
    let rows = sqlx::query(
        "SELECT seq, time_ms, actor, action, subject, outcome, detail, digest
         FROM audit_entries WHERE seq >= $1 ORDER BY seq",
    )
    .bind(i64::try_from(tree.len()).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() && only_if_newer {
        return Ok(None);
    }
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
            return Ok(None);
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
    Ok(Some(AuditHead {
        size: cp.size,
        note,
    }))
}
