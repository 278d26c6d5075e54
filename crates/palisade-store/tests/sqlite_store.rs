//! The SQLite store against a real database file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use palisade_audit::{EntryDraft, Verifier, verify_inclusion};
use palisade_core::clock::FixedClock;
use palisade_core::{DeviceId, DeviceState, KeyAlgorithm, ModelId};
use palisade_keystore::SoftwareKey;
use palisade_store::*;
use time::macros::datetime;

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    audit: AuditConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("palisade.db");
    let (key, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "audit").unwrap();
    let audit = AuditConfig {
        origin: "test.invalid/audit".into(),
        key_name: "test.invalid/audit".into(),
        signer: Arc::new(key),
    };
    Fixture {
        _dir: dir,
        path,
        audit,
    }
}

async fn open(f: &Fixture) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(
        &f.path,
        f.audit.clone(),
        Arc::new(FixedClock(datetime!(2026-11-26 12:00 UTC))),
    )
    .await
}

async fn append(store: &SqliteStore, n: u64) {
    for i in 0..n {
        store
            .commit(
                vec![],
                vec![EntryDraft::success("s", "test", format!("{i}"))],
            )
            .await
            .unwrap();
    }
}

fn model(id: &str) -> Change {
    Change::InsertModel(ModelRecord {
        id: ModelId::parse(id).unwrap(),
        description: String::new(),
        cert_validity_days: 90,
        policy_version: 1,
        approval_required: false,
        allowed_key_types: vec!["ecdsa-p256".into()],
        attestation: "none".into(),
        supplier: None,
        support_until_ms: None,
        security_update_days: None,
        created_ms: 1,
    })
}

fn device(id: &str, model: &str) -> Change {
    Change::InsertDevice(DeviceRecord {
        id: DeviceId::parse(id).unwrap(),
        model: ModelId::parse(model).unwrap(),
        state: DeviceState::Registered,
        hardware_serial: None,
        created_ms: 1,
        updated_ms: 1,
        onboarding: Default::default(),
        last_seen_ms: None,
        reported_firmware: None,
        hardware: Default::default(),
    })
}

#[tokio::test]
async fn committed_changes_and_audit_entries_survive_a_reopen() {
    let f = fixture();
    let store = open(&f).await.unwrap();
    let r = store
        .commit(
            vec![model("m1"), device("d1", "m1")],
            vec![
                EntryDraft::success("system", "model.add", "m1"),
                EntryDraft::success("system", "device.register", "d1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.audit_indices, vec![0, 1]);
    assert_eq!(r.checkpoint_size, 2);
    drop(store);
    let store = open(&f).await.unwrap();
    let d = store
        .device(&DeviceId::parse("d1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state, DeviceState::Registered);
    assert_eq!(store.audit_head().unwrap().size, 2);
}

#[tokio::test]
async fn a_failed_change_leaves_no_trace_and_does_not_undo_its_neighbours() {
    let f = fixture();
    let store = Arc::new(open(&f).await.unwrap());
    store
        .commit(
            vec![model("m1")],
            vec![EntryDraft::success("s", "model.add", "m1")],
        )
        .await
        .unwrap();
    let mut tasks = vec![];
    for i in 0..50 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            // Every fifth device names a model that does not exist.
            let m = if i % 5 == 0 { "nope" } else { "m1" };
            s.commit(
                vec![device(&format!("d{i}"), m)],
                vec![EntryDraft::success("s", "device.register", format!("d{i}"))],
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 40);
    let devices = store.devices(&DeviceFilter::default()).await.unwrap();
    assert_eq!(devices.len(), 40);
    // 1 model entry + 40 device entries, contiguous, and the log verifies.
    let head = store.audit_head().unwrap();
    assert_eq!(head.size, 41);
    let entries = store.audit_entries(0, 100).await.unwrap();
    let cps = store.audit_checkpoints(0, 1000).await.unwrap();
    let mut v = Verifier::new(
        &f.audit.verifier().unwrap(),
        Some("test.invalid/audit"),
        &cps,
    );
    for e in entries {
        v.push(e.entry, e.recorded_digest);
    }
    let report = v.finish();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, 41);
}

#[tokio::test]
async fn state_changes_are_compare_and_set() {
    let f = fixture();
    let store = open(&f).await.unwrap();
    store
        .commit(vec![model("m"), device("d", "m")], vec![])
        .await
        .unwrap();
    let id = DeviceId::parse("d").unwrap();
    let set = |expected, to| Change::SetDeviceState {
        id: id.clone(),
        expected,
        to,
        at_ms: 5,
    };
    store
        .commit(
            vec![set(DeviceState::Registered, DeviceState::Enrolled)],
            vec![],
        )
        .await
        .unwrap();
    let err = store
        .commit(
            vec![set(DeviceState::Registered, DeviceState::Enrolled)],
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
}

#[tokio::test]
async fn inclusion_proofs_verify_against_the_signed_head() {
    let f = fixture();
    let store = open(&f).await.unwrap();
    append(&store, 9).await;
    let p = store.inclusion_proof(4).await.unwrap();
    let cp = f
        .audit
        .verifier()
        .unwrap()
        .verify(&p.head.note, None)
        .unwrap();
    verify_inclusion(&p.entry.entry.digest(), 4, cp.size, &cp.root, &p.path).unwrap();
    assert!(store.inclusion_proof(9).await.is_err());
}

#[tokio::test]
async fn refuses_to_open_when_an_audit_row_was_edited() {
    let f = fixture();
    let store = open(&f).await.unwrap();
    append(&store, 3).await;
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut conn = {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&f.path)
            .connect()
            .await
            .unwrap()
    };
    sqlx::query("UPDATE audit_entries SET subject = 'forged' WHERE seq = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let err = open(&f).await.unwrap_err();
    assert!(matches!(err, StoreError::AuditDamaged { .. }), "{err}");
}
