//! Cross-node notifications over PostgreSQL `LISTEN`/`NOTIFY`: the database the
//! nodes already share is their only coordination point. A notification is
//! not stored: one sent while a listener is reconnecting is lost, and the
//! listener says so ([`Listener::recv`] gives `None`) so that its user can
//! catch up from the store.

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use crate::{Database, StoreError};

pub use palisade_core::cluster::MAX_NOTIFY_BYTES;

fn postgres_url(db: &Database) -> Result<&str, StoreError> {
    match db {
        Database::Postgres(url) => Ok(url),
        Database::Sqlite(_) => Err(StoreError::Config {
            detail: "cross-node notifications need a PostgreSQL database".into(),
        }),
    }
}

/// Sends notifications on a channel.
#[derive(Debug, Clone)]
pub struct Notifier {
    pool: PgPool,
}

impl Notifier {
    /// Connects (one connection, opened when first needed).
    pub async fn connect(db: &Database) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy(postgres_url(db)?)?;
        Ok(Self { pool })
    }

    /// Sends `payload` to every listener of `channel` (this node's included).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if payload.len() > MAX_NOTIFY_BYTES {
            return Err(StoreError::Config {
                detail: format!(
                    "a notification of {} bytes is over PostgreSQL's limit of {MAX_NOTIFY_BYTES}",
                    payload.len()
                ),
            });
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Receives the notifications of one channel.
#[derive(Debug)]
pub struct Listener {
    inner: PgListener,
}

impl Listener {
    /// Connects and listens on `channel`.
    pub async fn connect(db: &Database, channel: &str) -> Result<Self, StoreError> {
        let mut inner = PgListener::connect(postgres_url(db)?).await?;
        inner.listen(channel).await?;
        Ok(Self { inner })
    }

    /// The next payload; `None` when the connection was lost and has been
    /// re-established (notifications sent meanwhile are gone).
    pub async fn recv(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.inner.try_recv().await?.map(|n| n.payload().to_owned()))
    }
}
