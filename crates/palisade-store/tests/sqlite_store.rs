//! The SQLite store against a real database file: the backend conformance suite
//! (what every backend must do).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use palisade_core::KeyAlgorithm;
use palisade_core::clock::FixedClock;
use palisade_keystore::SoftwareKey;
use palisade_store::conformance::Backend;
use palisade_store::*;
use time::macros::datetime;

/// A database file in a temporary directory, with a fresh audit key.
struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
    audit: AuditConfig,
}

fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.db");
    let (key, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "audit").unwrap();
    let audit = AuditConfig {
        origin: "test.invalid/audit".into(),
        key_name: "test.invalid/audit".into(),
        signer: Arc::new(key),
    };
    Sqlite {
        _dir: dir,
        path,
        audit,
    }
}

#[async_trait(?Send)]
impl Backend for Sqlite {
    async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        let store = SqliteStore::open(
            &self.path,
            self.audit.clone(),
            Arc::new(FixedClock(datetime!(2026-11-26 12:00 UTC))),
        )
        .await?;
        Ok(Arc::new(store))
    }

    fn audit(&self) -> &AuditConfig {
        &self.audit
    }

    async fn tamper(&self, sql: &str) {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.path)
            .connect()
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

palisade_store::conformance_suite!(sqlite());
