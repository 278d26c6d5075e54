//! The writer: one task owns the write connection and groups queued commits
//! into one transaction (each in a savepoint, so one failure does not undo the
//! others), appends their audit entries, signs one checkpoint, commits with
//! `synchronous = FULL`, then answers every caller.

use std::sync::{Arc, Mutex};

use palisade_audit::{
    Checkpoint, Digest32, Entry, EntryDraft, MerkleLog, NoteVerifier, sign_checkpoint,
};
use palisade_core::Clock;
use sqlx::AnyConnection;
use sqlx::Connection;
use tokio::sync::{RwLock, mpsc, oneshot};

use super::{AUDIT_LOCK, AuditConfig, Engine, LogState, MAX_BATCH, extend_tree, load_tree};

use crate::{AuditHead, Change, Receipt, StoreError};

pub(super) struct Job {
    pub(super) changes: Vec<Change>,
    pub(super) audit: Vec<EntryDraft>,
    pub(super) reply: oneshot::Sender<Result<Receipt, StoreError>>,
}

pub(super) struct Writer {
    pub(super) conn: AnyConnection,
    /// The connection failed; a new one is made before the next batch.
    pub(super) broken: bool,
    /// Where to reconnect, and how long to wait for it.
    pub(super) db: super::Database,
    pub(super) timeout: std::time::Duration,
    pub(super) engine: Engine,
    pub(super) rx: mpsc::Receiver<Job>,
    pub(super) log: Arc<RwLock<LogState>>,
    pub(super) head: Arc<Mutex<Option<AuditHead>>>,
    pub(super) audit: AuditConfig,
    pub(super) verifier: NoteVerifier,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) path: String,
}

pub(super) async fn exec(conn: &mut AnyConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(())
}

pub(super) fn conflict(what: &'static str, key: &str, reason: &str) -> StoreError {
    StoreError::Conflict {
        what,
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

pub(super) fn map_unique(e: sqlx::Error, what: &'static str, key: &str) -> StoreError {
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
    pub(super) async fn run(mut self) {
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
        // Closed politely, so that PostgreSQL frees the writer lock at once.
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "closing the writer's connection");
        }
        tracing::debug!("store writer stopped");
    }

    async fn process(&mut self, jobs: Vec<Job>) {
        if self.broken
            && let Err(e) = self.recover(None).await
        {
            for j in jobs {
                let _ = j.reply.send(Err(self.unavailable(&e)));
            }
            return;
        }
        let now_ms = self.clock.now_ms();
        // SQLite takes the write lock at BEGIN IMMEDIATE (no upgrade deadlock
        // with a reader); PostgreSQL locks rows as they are written.
        let begin = match self.engine {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        };
        if let Err(e) = exec(&mut self.conn, begin).await {
            // A connection that broke since the last batch: reconnect and try
            // once more before telling the callers.
            let retried = match self.conn.ping().await {
                Ok(()) => Err(e),
                Err(_) => match self.recover(None).await {
                    Ok(()) => exec(&mut self.conn, begin).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = retried {
                self.broken = self.conn.ping().await.is_err();
                for j in jobs {
                    let _ = j.reply.send(Err(self.unavailable(&e)));
                }
                return;
            }
        }
        let log_lock = self.log.clone();
        let mut log = log_lock.write().await;
        // Other nodes append to the same log on PostgreSQL: take the audit
        // lock (held to COMMIT) and read what they appended since our last
        // batch, so this batch continues the one tree.
        if self.engine == Engine::Postgres
            && let Err(e) = self.catch_up(&mut log).await
        {
            self.fail(&mut log, jobs, &e).await;
            return;
        }
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
            Err(e) => self.fail(&mut log, jobs, &e).await,
        }
    }

    /// The batch failed: rolls back, reloads the tree (it may hold digests
    /// that were never committed) and tells every caller.
    async fn fail(&mut self, log: &mut LogState, jobs: Vec<Job>, e: &StoreError) {
        tracing::error!(error = %e, "audit batch commit failed; rolling back");
        let _ = exec(&mut self.conn, "ROLLBACK").await;
        if self.conn.ping().await.is_err() {
            // The connection itself failed (the server restarted, the backend
            // was ended): whether the COMMIT landed is unknown, so nobody is
            // told it did, and the tree is reloaded from what is there.
            self.broken = true;
            let detail = format!(
                "{}: the connection failed during the commit ({e}); whether the change was saved is unknown: look before retrying",
                self.path
            );
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable {
                    detail: detail.clone(),
                }));
            }
            if let Err(e) = self.recover(Some(log)).await {
                tracing::warn!(error = %e, "the database is still unavailable");
            }
            return;
        }
        match self.reload().await {
            Ok((tree, head)) => {
                log.tree = tree;
                if let Ok(mut slot) = self.head.lock() {
                    *slot = head;
                }
            }
            Err(e) => tracing::error!(error = %e, "reloading the audit tree failed"),
        }
        let msg = e.to_string();
        for job in jobs {
            let _ = job.reply.send(Err(StoreError::Checkpoint(msg.clone())));
        }
    }

    /// A new connection and the tree reloaded from the database; clears
    /// `broken` when both worked. `log` is the tree when the caller already
    /// holds it.
    async fn recover(&mut self, log: Option<&mut LogState>) -> Result<(), StoreError> {
        let conn = super::connect_writer(&self.db, self.timeout).await?;
        self.conn = conn;
        let (tree, head) = self.reload().await?;
        match log {
            Some(log) => log.tree = tree,
            None => self.log.write().await.tree = tree,
        }
        if let Ok(mut slot) = self.head.lock() {
            *slot = head;
        }
        self.broken = false;
        tracing::info!(database = %self.path, "reconnected to the database");
        Ok(())
    }

    /// What a caller is told when the database could not take its change.
    fn unavailable(&self, e: &StoreError) -> StoreError {
        match e {
            StoreError::Unavailable { .. } => StoreError::Unavailable {
                detail: e.to_string(),
            },
            _ => StoreError::Unavailable {
                detail: format!("{}: {e}; nothing was changed", self.path),
            },
        }
    }

    /// The whole tree from the database (on PostgreSQL under the audit lock, so
    /// that no node appends while it is read).
    async fn reload(&mut self) -> Result<(MerkleLog, Option<AuditHead>), StoreError> {
        if self.engine == Engine::Sqlite {
            return load_tree(
                &mut self.conn,
                &self.verifier,
                &self.audit.origin,
                &self.path,
            )
            .await;
        }
        exec(&mut self.conn, "BEGIN").await?;
        let loaded = async {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut self.conn)
                .await?;
            load_tree(
                &mut self.conn,
                &self.verifier,
                &self.audit.origin,
                &self.path,
            )
            .await
        }
        .await;
        let _ = exec(&mut self.conn, "COMMIT").await;
        loaded
    }

    /// Takes the audit lock for this transaction and extends the tree with
    /// the entries other nodes appended, checked against their checkpoint.
    async fn catch_up(&mut self, log: &mut LogState) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut self.conn)
            .await?;
        let newer = extend_tree(
            &mut self.conn,
            &mut log.tree,
            &self.verifier,
            &self.audit.origin,
            &self.path,
            true,
        )
        .await?;
        if let Some(head) = newer
            && let Ok(mut slot) = self.head.lock()
        {
            *slot = Some(head);
        }
        Ok(())
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
        sqlx::query("INSERT INTO audit_checkpoints (size, note, time_ms) VALUES ($1, $2, $3)")
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
            if let Some(v) = super::apply::apply(&mut self.conn, change).await? {
                receipt.counters.push(v);
            }
        }
        Ok(receipt)
    }

    /// Inserts the batch's audit entries, many rows per statement.
    async fn insert_entries(&mut self, entries: &[(Entry, Digest32)]) -> Result<(), StoreError> {
        // 8 parameters a row, 16 rows a statement: through sqlx's Any driver,
        // long statements cost more than they save (256 rows: 40-48k appends/s
        // on SQLite at 256 writers; 16 rows: 66k; see BENCHMARKS.md).
        for chunk in entries.chunks(16) {
            let mut sql = String::from(
                "INSERT INTO audit_entries (seq, time_ms, actor, action, subject, outcome, detail, digest) VALUES ",
            );
            for i in 0..chunk.len() {
                let p = i * 8;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (e, d) in chunk {
                q = q
                    .bind(i64::try_from(e.index).unwrap_or(i64::MAX))
                    .bind(e.time_ms)
                    .bind(e.actor.clone())
                    .bind(e.action.clone())
                    .bind(e.subject.clone())
                    .bind(e.outcome.clone())
                    .bind(e.detail.clone())
                    .bind(d.to_vec());
            }
            q.execute(&mut self.conn).await?;
        }
        Ok(())
    }
}
