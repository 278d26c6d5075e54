//! The SQLite store against a real database file: the backend conformance suite
//! (what every backend must do), then what only SQLite's files can show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use palisade_audit::EntryDraft;
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
}

palisade_store::conformance_suite!(sqlite());

#[tokio::test]
async fn refuses_to_open_when_an_audit_row_was_edited() {
    let db = sqlite();
    let store = db.open().await.unwrap();
    for i in 0..3 {
        store
            .commit(
                vec![],
                vec![EntryDraft::success("s", "test", format!("{i}"))],
            )
            .await
            .unwrap();
    }
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut conn = {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db.path)
            .connect()
            .await
            .unwrap()
    };
    sqlx::query("UPDATE audit_entries SET subject = 'forged' WHERE seq = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let err = db.open().await.unwrap_err();
    assert!(matches!(err, StoreError::AuditDamaged { .. }), "{err}");
}
