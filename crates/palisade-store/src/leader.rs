//! Work that one node of a cluster must do alone (re-signing the TUF
//! timestamp, driving rollouts, daily posture snapshots): [`Leadership`] says
//! whether this node does it now. On PostgreSQL it is a session advisory lock
//! held on a connection of its own: the node that holds it leads; when that node
//! dies its connection ends, the lock is released, and another node takes it at
//! its next try (every [`TRY_EVERY`]). On SQLite there is one process per
//! database, which always leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::Database;

/// How often a follower tries to take the lead, and a leader checks it still
/// holds it.
pub const TRY_EVERY: Duration = Duration::from_secs(1);

/// Whether this node leads one kind of work.
#[derive(Debug)]
pub struct Leadership {
    name: String,
    leader: AtomicBool,
}

impl Leadership {
    /// Leadership of `name` among the nodes on `db`, kept (or sought) until
    /// `stop` changes.
    pub fn start(db: &Database, name: &str, stop: watch::Receiver<bool>) -> Arc<Self> {
        let me = Arc::new(Self {
            name: name.to_owned(),
            leader: AtomicBool::new(matches!(db, Database::Sqlite(_))),
        });
        if let Database::Postgres(url) = db {
            tokio::spawn(me.clone().hold(url.clone(), stop));
        }
        me
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// The advisory lock key of a name: stable across nodes and versions
    /// (FNV-1a, 64 bits).
    fn key(&self) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("palisade/leader/{}", self.name).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(h.to_ne_bytes())
    }

    async fn hold(self: Arc<Self>, url: String, mut stop: watch::Receiver<bool>) {
        let mut conn: Option<PgConnection> = None;
        loop {
            let leading = match conn.as_mut() {
                None => match PgConnection::connect(&url).await {
                    Ok(c) => {
                        conn = Some(c);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(work = %self.name, error = %e, "cannot reach the database to seek leadership");
                        false
                    }
                },
                Some(c) if self.is_leader() => {
                    // Still ours while the connection lives.
                    match sqlx::query("SELECT 1").execute(&mut *c).await {
                        Ok(_) => true,
                        Err(_) => {
                            conn = None;
                            false
                        }
                    }
                }
                Some(c) => {
                    match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                        .bind(self.key())
                        .fetch_one(&mut *c)
                        .await
                    {
                        Ok(got) => got,
                        Err(_) => {
                            conn = None;
                            false
                        }
                    }
                }
            };
            if leading != self.is_leader() {
                tracing::info!(work = %self.name, leading, "leadership changed");
                self.leader.store(leading, Ordering::Relaxed);
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(TRY_EVERY) => {}
            }
        }
        self.leader.store(false, Ordering::Relaxed);
        if let Some(c) = conn {
            let _ = c.close().await;
        }
    }
}
