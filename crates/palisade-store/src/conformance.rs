//! The store conformance suite: what every backend of [`Store`] must do, as one
//! set of checks parameterised by a [`Backend`] that opens its database. A
//! backend's test file runs all of them with one line:
//!
//! ```text
//! palisade_store::conformance_suite!(my_backend().await);
//! ```
//!
//! Each check starts from an empty database and covers one promise: durable
//! before acknowledged, one failure never undoing its neighbours, compare-and-set
//! state changes re-checked inside the commit, proofs against signed heads, and
//! every change family written and read back as it went in.

// A test suite: a failed expectation is the test failing, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use palisade_audit::{EntryDraft, Verifier, verify_consistency, verify_inclusion};
use palisade_core::{
    AlertState, DeviceId, DeviceState, KeyProtection, ModelId, OperatorName, Role,
    RolloutDeviceState, RolloutName, RolloutState, SiteName, SupplierName, SupportStage, Tag,
    UnmanagedState, UpdateState,
};

use crate::*;

/// A backend under test. Opening need not be `Send` (sqlx's migrations are
/// not provably so); the suite runs each check on the test's own task.
#[async_trait(?Send)]
pub trait Backend {
    /// Opens the backend's database: the same one on every call, so that a
    /// second open sees what the first committed.
    async fn open(&self) -> Result<Arc<dyn Store>, StoreError>;
    /// How its audit log is sealed.
    fn audit(&self) -> &AuditConfig;
    /// Runs one statement straight on the database, past the store (what
    /// someone with access to the database could do).
    async fn tamper(&self, sql: &str);
}

/// Runs every check of the suite as its own `#[tokio::test]`, each with a
/// backend made by `$backend` (an expression, evaluated per test, that may
/// `.await`). With `optional`, the expression gives an `Option` and a check
/// whose backend is `None` (its server is not there; the backend says why)
/// returns at once.
#[macro_export]
macro_rules! conformance_suite {
    (@each $how:tt; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                $crate::conformance_suite!(@open backend $how);
                $crate::conformance::$check(&backend).await;
            }
        )*
    };
    (@open $b:ident [plain $backend:expr]) => {
        let $b = $backend;
    };
    (@open $b:ident [optional $backend:expr]) => {
        let Some($b) = $backend else { return };
    };
    (@list $how:tt) => {
        $crate::conformance_suite!(@each $how;
            committed_changes_and_audit_entries_survive_a_reopen,
            an_edited_audit_row_is_refused_at_open,
            a_failed_change_leaves_no_trace_and_does_not_undo_its_neighbours,
            state_changes_are_compare_and_set,
            required_device_states_are_rechecked_inside_the_commit,
            inclusion_proofs_verify_against_the_signed_head,
            consistency_proofs_link_an_older_head_to_the_newest,
            audit_entries_are_found_by_subject,
            devices_are_found_by_model_state_and_tags,
            enrolment_and_hardware_trust_are_recorded_on_the_device,
            certificates_are_revoked_once_and_listed_until_they_expire,
            certificates_are_counted_by_the_ca_that_issued_them,
            api_tokens_are_revoked_once,
            counters_count_up_in_commit_order,
            signed_documents_replace_only_the_version_they_name,
            fleet_windows_keep_each_devices_latest_and_are_read_by_close_time,
            advisories_are_found_by_alias_and_package_and_keep_their_first_sighting,
            commands_are_queued_sent_and_acknowledged_by_their_device_only,
            a_pending_wipe_closes_once_with_its_nonce,
            support_policies_keep_their_stage_and_move_it_by_compare_and_set,
            a_releases_vex_statements_are_replaced_by_the_next_upload,
            advisory_exposure_is_kept_per_day_and_exploitation_once,
            mqtt_sessions_and_retained_messages_survive_a_reopen,
            onboarding_records_round_trip_and_enrolment_tokens_are_single_use,
            releases_never_lower_the_security_version_and_assignments_only_move_forward,
            rollouts_and_their_devices_round_trip,
            sites_placements_and_edges_round_trip,
            unmanaged_hosts_merge_their_sightings_and_keep_the_operators_decision,
            alerts_move_through_their_lifecycle_and_resolved_ones_are_pruned,
            timeline_events_are_kept_in_order_and_pruned,
            the_newest_event_of_a_kind_is_found_per_device,
            audit_entries_are_found_by_action,
            posture_snapshots_are_replaced_per_day_and_read_by_scope,
            disabling_an_account_revokes_its_sessions,
            device_groups_are_saved_by_name,
            the_device_list_filters_sorts_and_pages_on_the_server,
            devices_are_counted_by_model_and_state_and_expiring_certificates_found,
                );
    };
    (optional $backend:expr) => {
        $crate::conformance_suite!(@list [optional $backend]);
    };
    ($backend:expr) => {
        $crate::conformance_suite!(@list [plain $backend]);
    };
}

/// Creates database `name` on the PostgreSQL server at `admin` (a URL whose
/// account may create databases) unless it exists; returns the URL of the new
/// database. For tests that run a server on PostgreSQL.
pub async fn postgres_database(admin: &str, name: &str) -> Result<String, StoreError> {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(StoreError::Config {
            detail: format!("database name {name:?}: lower-case letters, digits and _ only"),
        });
    }
    let mut conn = sqlx::AnyConnection::connect(admin).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
    }
    conn.close().await?;
    let admin: Database = admin.parse()?;
    admin
        .sibling(name)
        .map(|d| d.url())
        .ok_or_else(|| StoreError::Config {
            detail: "not a PostgreSQL URL".into(),
        })
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("a valid test identifier")
}

/// A model with the defaults.
pub fn model(name: &str) -> Change {
    Change::InsertModel(ModelRecord {
        id: id(name),
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

/// A registered device of `model`.
pub fn device(name: &str, model: &str) -> Change {
    Change::InsertDevice(DeviceRecord {
        id: id(name),
        model: id(model),
        state: DeviceState::Registered,
        hardware_serial: None,
        created_ms: 1,
        updated_ms: 1,
        onboarding: Onboarding::default(),
        last_seen_ms: None,
        reported_firmware: None,
        hardware: HardwareTrust::default(),
    })
}

fn cert(serial: &str, device: &str, not_after_ms: i64) -> Change {
    Change::InsertCertificate(CertRecord {
        serial: serial.into(),
        profile: "device".into(),
        subject: format!("CN={device}"),
        device: Some(id(device)),
        not_before_ms: 0,
        not_after_ms,
        status: CertStatus::Valid,
        revoked_ms: None,
        reason: None,
        der: vec![0x30, 0x00],
        issued_ms: 1,
        issuer: String::new(),
    })
}

fn cert_from(serial: &str, device: &str, not_after_ms: i64, issuer: &str) -> Change {
    match cert(serial, device, not_after_ms) {
        Change::InsertCertificate(mut c) => {
            c.issuer = issuer.into();
            Change::InsertCertificate(c)
        }
        other => other,
    }
}

async fn commit(store: &dyn Store, changes: Vec<Change>) -> Result<Receipt, StoreError> {
    store.commit(changes, vec![]).await
}

async fn ok(store: &dyn Store, changes: Vec<Change>) -> Receipt {
    match commit(store, changes).await {
        Ok(r) => r,
        Err(e) => panic!("commit refused: {e}"),
    }
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

async fn device_of(store: &dyn Store, name: &str) -> DeviceRecord {
    store
        .device(&id(name))
        .await
        .expect("reading a device")
        .expect("the device exists")
}

/// Committed changes and audit entries are there after the store is reopened,
/// and the receipt names the entries and the checkpoint that covers them.
pub async fn committed_changes_and_audit_entries_survive_a_reopen(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let r = store
        .commit(
            vec![model("m1"), device("d1", "m1")],
            vec![
                EntryDraft::success("system", "model.add", "m1"),
                EntryDraft::success("system", "device.register", "d1"),
            ],
        )
        .await
        .expect("commit");
    assert_eq!(r.audit_indices, vec![0, 1]);
    assert_eq!(r.checkpoint_size, 2);
    drop(store);
    let store = b.open().await.expect("reopen");
    assert_eq!(
        device_of(&*store, "d1").await.state,
        DeviceState::Registered
    );
    assert_eq!(store.audit_head().expect("a head").size, 2);
}

/// An audit row edited in the database (past the store) no longer matches the
/// signed checkpoint: the store refuses to open.
pub async fn an_edited_audit_row_is_refused_at_open(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    for i in 0..3 {
        store
            .commit(
                vec![],
                vec![EntryDraft::success("s", "test", format!("{i}"))],
            )
            .await
            .expect("commit");
    }
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    b.tamper("UPDATE audit_entries SET subject = 'forged' WHERE seq = 1")
        .await;
    let err = b.open().await.expect_err("an edited log must not open");
    assert!(matches!(err, StoreError::AuditDamaged { .. }), "{err}");
}

/// Concurrent commits are grouped, yet a refused one changes nothing and its
/// neighbours land; the log stays contiguous and verifies.
pub async fn a_failed_change_leaves_no_trace_and_does_not_undo_its_neighbours(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    store
        .commit(
            vec![model("m1")],
            vec![EntryDraft::success("s", "model.add", "m1")],
        )
        .await
        .expect("commit");
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
    let mut landed = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => landed += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(landed, 40);
    let devices = store.devices(&DeviceFilter::default()).await.expect("read");
    assert_eq!(devices.len(), 40);
    let head = store.audit_head().expect("a head");
    assert_eq!(head.size, 41);
    let entries = store.audit_entries(0, 100).await.expect("entries");
    let cps = store.audit_checkpoints(0, 1000).await.expect("checkpoints");
    let key = b.audit().verifier().expect("verifier");
    let mut v = Verifier::new(&key, Some(&b.audit().origin), &cps);
    for e in entries {
        v.push(e.entry, e.recorded_digest);
    }
    let report = v.finish();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, 41);
}

/// A state change names the state it expects; a stale one is a conflict.
pub async fn state_changes_are_compare_and_set(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(&*store, vec![model("m"), device("d", "m")]).await;
    let set = |expected, to| Change::SetDeviceState {
        id: id("d"),
        expected,
        to,
        at_ms: 5,
    };
    ok(
        &*store,
        vec![set(DeviceState::Registered, DeviceState::Enrolled)],
    )
    .await;
    assert!(is_conflict(
        commit(
            &*store,
            vec![set(DeviceState::Registered, DeviceState::Enrolled)]
        )
        .await
    ));
    // AdvanceDeviceState moves only from its `from` state and is otherwise a no-op.
    let advance = |from, to| Change::AdvanceDeviceState {
        id: id("d"),
        from,
        to,
        at_ms: 6,
    };
    ok(
        &*store,
        vec![advance(DeviceState::Registered, DeviceState::Active)],
    )
    .await;
    assert_eq!(device_of(&*store, "d").await.state, DeviceState::Enrolled);
    ok(
        &*store,
        vec![advance(DeviceState::Enrolled, DeviceState::Active)],
    )
    .await;
    let d = device_of(&*store, "d").await;
    assert_eq!(d.state, DeviceState::Active);
    assert_eq!(d.updated_ms, 6);
}

/// `RequireDeviceState` is checked inside the transaction: outside the allowed
/// states the whole commit, certificate included, is refused.
pub async fn required_device_states_are_rechecked_inside_the_commit(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(&*store, vec![model("m"), device("d", "m")]).await;
    let refused = commit(
        &*store,
        vec![
            Change::RequireDeviceState {
                id: id("d"),
                allowed: DeviceState::all_where(DeviceState::may_reenroll),
            },
            cert("01", "d", i64::MAX),
        ],
    )
    .await;
    assert!(is_conflict(refused));
    assert!(store.certificate("01").await.expect("read").is_none());
    ok(
        &*store,
        vec![
            Change::RequireDeviceState {
                id: id("d"),
                allowed: DeviceState::all_where(DeviceState::may_enroll),
            },
            cert("01", "d", i64::MAX),
        ],
    )
    .await;
    assert!(store.certificate("01").await.expect("read").is_some());
    let missing = commit(
        &*store,
        vec![Change::RequireDeviceState {
            id: id("ghost"),
            allowed: DeviceState::ALL.to_vec(),
        }],
    )
    .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

async fn append(store: &dyn Store, n: u64) {
    for i in 0..n {
        store
            .commit(
                vec![],
                vec![EntryDraft::success("s", "test", format!("{i}"))],
            )
            .await
            .expect("append");
    }
}

/// Every entry has an inclusion proof against the newest signed checkpoint;
/// an index past the end has none.
pub async fn inclusion_proofs_verify_against_the_signed_head(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    append(&*store, 9).await;
    let key = b.audit().verifier().expect("verifier");
    for index in [0, 4, 8] {
        let p = store.inclusion_proof(index).await.expect("proof");
        let cp = key.verify(&p.head.note, None).expect("signed head");
        verify_inclusion(&p.entry.entry.digest(), index, cp.size, &cp.root, &p.path)
            .expect("the proof verifies");
    }
    assert!(store.inclusion_proof(9).await.is_err());
}

/// An older checkpoint is a prefix of the newest, by proof.
pub async fn consistency_proofs_link_an_older_head_to_the_newest(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    append(&*store, 5).await;
    let old = store.audit_head().expect("a head");
    append(&*store, 6).await;
    let key = b.audit().verifier().expect("verifier");
    let old_cp = key.verify(&old.note, None).expect("old head");
    let p = store.consistency_proof(old.size).await.expect("proof");
    let new_cp = key.verify(&p.head.note, None).expect("new head");
    assert_eq!(new_cp.size, 11);
    verify_consistency(
        old_cp.size,
        &old_cp.root,
        new_cp.size,
        &new_cp.root,
        &p.path,
    )
    .expect("the old log is a prefix of the new");
    let all = store.audit_checkpoints(0, 100).await.expect("checkpoints");
    assert!(all.iter().any(|c| c.size == 5) && all.iter().any(|c| c.size == 11));
}

/// A device's entries are found by subject, and by a `device` in the detail.
pub async fn audit_entries_are_found_by_subject(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    store
        .commit(
            vec![],
            vec![
                EntryDraft::success("op", "device.register", "cam-1"),
                EntryDraft::success("op", "device.register", "cam-10"),
                EntryDraft::success("op", "site.place", "lab")
                    .with_detail(serde_json::json!({ "device": "cam-1" })),
            ],
        )
        .await
        .expect("commit");
    let about = store.audit_entries_about("cam-1", 100).await.expect("read");
    let actions: Vec<&str> = about.iter().map(|e| e.entry.action.as_str()).collect();
    assert_eq!(actions, ["device.register", "site.place"]);
}

/// Devices are listed by model and state, and found by all of a set of tags.
pub async fn devices_are_found_by_model_state_and_tags(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![
            model("cam"),
            model("lock"),
            device("cam-1", "cam"),
            device("cam-2", "cam"),
            device("lock-1", "lock"),
        ],
    )
    .await;
    ok(
        &*store,
        vec![
            Change::SetDeviceState {
                id: id("cam-2"),
                expected: DeviceState::Registered,
                to: DeviceState::Decommissioned,
                at_ms: 2,
            },
            Change::SetDeviceTags {
                device: id("cam-1"),
                tags: vec![id("lab"), id("floor-2")],
            },
            Change::SetDeviceTags {
                device: id("lock-1"),
                tags: vec![id("lab")],
            },
        ],
    )
    .await;
    let cams = store
        .devices(&DeviceFilter {
            model: Some(id("cam")),
            ..DeviceFilter::default()
        })
        .await
        .expect("read");
    assert_eq!(cams.len(), 2);
    let retired = store
        .devices(&DeviceFilter {
            state: Some(DeviceState::Decommissioned),
            ..DeviceFilter::default()
        })
        .await
        .expect("read");
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].id.as_str(), "cam-2");
    let lab: Vec<DeviceId> = store.devices_tagged(&[id("lab")]).await.expect("read");
    assert_eq!(lab, [id::<DeviceId>("cam-1"), id("lock-1")]);
    let both = store
        .devices_tagged(&[id("lab"), id("floor-2")])
        .await
        .expect("read");
    assert_eq!(both, [id::<DeviceId>("cam-1")]);
    let tags: Vec<Tag> = store.device_tags(&id("cam-1")).await.expect("read");
    assert_eq!(tags, [id::<Tag>("floor-2"), id("lab")]);
    assert_eq!(store.models().await.expect("read").len(), 2);
    assert!(is_conflict(commit(&*store, vec![model("cam")]).await));
}

/// What enrolment, approval, attestation and presence record lands on the
/// device record.
pub async fn enrolment_and_hardware_trust_are_recorded_on_the_device(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(&*store, vec![model("m"), device("d", "m")]).await;
    ok(
        &*store,
        vec![
            Change::RecordEnrollment {
                id: id("d"),
                key_sha256: "ab".repeat(32),
                attached_policy: "{}".into(),
                at_ms: 10,
            },
            Change::RecordKeyProtection {
                id: id("d"),
                key_protection: KeyProtection::Tpm,
                ak_public: Some(vec![1, 2, 3]),
                ek_sha256: Some("cd".repeat(32)),
            },
            Change::RecordAttestation {
                id: id("d"),
                status: "ok".into(),
                detail: "PCR 9 matches".into(),
                at_ms: 11,
            },
            Change::MarkPending {
                id: id("d"),
                at_ms: 12,
            },
            Change::MarkPending {
                id: id("d"),
                at_ms: 13,
            },
            Change::ApproveDevice {
                id: id("d"),
                at_ms: 14,
            },
            Change::RecordPresence(vec![(id("d"), 20, Some("1.2.0".into()))]),
            Change::RecordPresence(vec![(id("d"), 15, None)]),
        ],
    )
    .await;
    assert!(is_conflict(
        commit(
            &*store,
            vec![Change::ApproveDevice {
                id: id("d"),
                at_ms: 15
            }]
        )
        .await
    ));
    let d = device_of(&*store, "d").await;
    assert_eq!(d.onboarding.enrolled_key_sha256, Some("ab".repeat(32)));
    assert_eq!(
        d.onboarding.pending_since_ms,
        Some(12),
        "the first pending time stays"
    );
    assert_eq!(d.onboarding.approved_ms, Some(14));
    assert_eq!(d.hardware.key_protection, Some(KeyProtection::Tpm));
    assert_eq!(d.hardware.ak_public, Some(vec![1, 2, 3]));
    assert_eq!(d.hardware.attestation_status.as_deref(), Some("ok"));
    assert_eq!(
        d.last_seen_ms,
        Some(20),
        "an older sighting does not go back in time"
    );
    assert_eq!(d.reported_firmware.as_deref(), Some("1.2.0"));
}

/// A certificate is revoked once, with its reason; revoked ones are listed
/// for the CRL until they expire.
pub async fn certificates_are_revoked_once_and_listed_until_they_expire(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![
            model("m"),
            device("d", "m"),
            cert("0a", "d", 1_000),
            cert("0b", "d", 5_000),
            cert("0c", "d", 5_000),
        ],
    )
    .await;
    assert!(is_conflict(commit(&*store, vec![cert("0a", "d", 9)]).await));
    let revoke = |serial: &str| Change::RevokeCertificate {
        serial: serial.into(),
        reason: "keyCompromise".into(),
        at_ms: 500,
    };
    ok(&*store, vec![revoke("0a"), revoke("0b")]).await;
    assert!(is_conflict(commit(&*store, vec![revoke("0a")]).await));
    assert!(is_conflict(commit(&*store, vec![revoke("ff")]).await));
    let a = store
        .certificate("0a")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(a.status, CertStatus::Revoked);
    assert_eq!(a.revoked_ms, Some(500));
    assert_eq!(a.reason.as_deref(), Some("keyCompromise"));
    let crl: Vec<String> = store
        .revoked_unexpired(2_000)
        .await
        .expect("read")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(crl, ["0b"]);
    let valid = store
        .certificates(&CertFilter {
            device: Some(id("d")),
            status: Some(CertStatus::Valid),
            limit: None,
        })
        .await
        .expect("read");
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].serial, "0c");
}

/// Each certificate names the CA that issued it: an issuing CA's last
/// unexpired valid certificate bounds how long it stays trusted, and the
/// devices still on other issuers are found for renewal.
pub async fn certificates_are_counted_by_the_ca_that_issued_them(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![
            model("m"),
            device("d1", "m"),
            device("d2", "m"),
            device("d3", "m"),
            cert("01", "d1", 3_000),
            cert_from("02", "d2", 4_000, "aa"),
            cert_from("03", "d2", 9_000, "aa"),
            cert_from("04", "d3", 8_000, "bb"),
        ],
    )
    .await;
    ok(
        &*store,
        vec![Change::RevokeCertificate {
            serial: "03".into(),
            reason: "superseded".into(),
            at_ms: 10,
        }],
    )
    .await;
    let last = |issuer: &'static str, now: i64| {
        let store = store.clone();
        async move { store.issuer_last_expiry(issuer, now).await.expect("read") }
    };
    assert_eq!(
        last("aa", 100).await,
        Some(4_000),
        "revoked ones do not count"
    );
    assert_eq!(last("", 100).await, Some(3_000));
    assert_eq!(last("aa", 4_000).await, None, "expired ones do not count");
    assert_eq!(last("cc", 100).await, None);
    let elsewhere = store
        .devices_issued_elsewhere("bb", "bb", 100, 10)
        .await
        .expect("read");
    assert_eq!(elsewhere, [id("d1"), id("d2")]);
    let elsewhere = store
        .devices_issued_elsewhere("bb", "", 100, 10)
        .await
        .expect("read");
    assert_eq!(elsewhere, [id("d2")]);
    assert!(
        store
            .certificate_authorities()
            .await
            .expect("read")
            .is_empty()
    );
}

/// An API token is stored by id with its role and revoked once.
pub async fn api_tokens_are_revoked_once(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let token = TokenRecord {
        id: "0123456789abcdef".into(),
        operator: id::<OperatorName>("alice"),
        role: Role::Operator,
        secret_hash: [7; 32],
        created_ms: 1,
        expires_ms: Some(99),
        revoked_ms: None,
    };
    ok(&*store, vec![Change::InsertToken(token.clone())]).await;
    assert_eq!(
        store.token(&token.id).await.expect("read"),
        Some(token.clone())
    );
    let revoke = Change::RevokeToken {
        id: token.id.clone(),
        at_ms: 50,
    };
    ok(&*store, vec![revoke.clone()]).await;
    assert!(is_conflict(commit(&*store, vec![revoke]).await));
    let listed = store.tokens().await.expect("read");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_ms, Some(50));
}

/// Counters go up by one per bump, in commit order, durably.
pub async fn counters_count_up_in_commit_order(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let bump = || Change::BumpCounter { name: "crl_number" };
    assert_eq!(ok(&*store, vec![bump(), bump()]).await.counters, [1, 2]);
    drop(store);
    let store = b.open().await.expect("reopen");
    assert_eq!(ok(&*store, vec![bump()]).await.counters, [3]);
}

pub async fn signed_documents_replace_only_the_version_they_name(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let put = |version: u64, replaces: Option<u64>, body: &[u8]| Change::PutDocument {
        name: "tuf/timestamp.json".into(),
        version,
        replaces,
        body: body.to_vec(),
        at_ms: 1000 + i64::try_from(version).unwrap(),
    };
    assert_eq!(store.document("tuf/timestamp.json").await.unwrap(), None);
    ok(&*store, vec![put(1, None, b"one")]).await;
    // A second "first" version, and a version that replaces one no longer
    // stored (two nodes racing), are refused and change nothing.
    assert!(is_conflict(
        commit(&*store, vec![put(1, None, b"other")]).await
    ));
    ok(&*store, vec![put(2, Some(1), b"two")]).await;
    assert!(is_conflict(
        commit(&*store, vec![put(2, Some(1), b"late")]).await
    ));
    // One refused document undoes the others in its commit.
    let other = Change::PutDocument {
        name: "tuf/snapshot.json".into(),
        version: 1,
        replaces: None,
        body: b"snap".to_vec(),
        at_ms: 5,
    };
    assert!(is_conflict(
        commit(&*store, vec![other, put(3, Some(1), b"x")]).await
    ));
    assert_eq!(store.document("tuf/snapshot.json").await.unwrap(), None);
    drop(store);
    let store = b.open().await.expect("reopen");
    let d = store.document("tuf/timestamp.json").await.unwrap().unwrap();
    assert_eq!(
        (d.version, d.body.as_slice(), d.updated_ms),
        (2, &b"two"[..], 1002)
    );
    // Bodies are bytes, not text.
    ok(&*store, vec![put(3, Some(2), &[0, 0xff, 0x80])]).await;
    assert_eq!(
        store
            .document("tuf/timestamp.json")
            .await
            .unwrap()
            .unwrap()
            .body,
        [0, 0xff, 0x80]
    );
}

pub async fn fleet_windows_keep_each_devices_latest_and_are_read_by_close_time(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let w = |device: &str, closed_ms: i64, dests: u64, node: &str| FleetWindowRecord {
        device: id(device),
        model: id("cam"),
        closed_ms,
        dests,
        bytes_out: 1 << 40,
        bytes_in: 7,
        node: node.into(),
    };
    ok(
        &*store,
        vec![Change::RecordFleetWindows(vec![
            w("cam-1", 60_000, 2, "a"),
            w("cam-2", 61_000, 3, "a"),
        ])],
    )
    .await;
    // cam-1 moved to node b: its newer window replaces the older one.
    ok(
        &*store,
        vec![Change::RecordFleetWindows(vec![w(
            "cam-1", 121_000, 40, "b",
        )])],
    )
    .await;
    assert_eq!(
        store.fleet_windows(0, 65_000).await.unwrap(),
        vec![w("cam-2", 61_000, 3, "a")]
    );
    assert_eq!(
        store.fleet_windows(61_000, 125_000).await.unwrap(),
        vec![w("cam-1", 121_000, 40, "b")]
    );
    ok(
        &*store,
        vec![Change::PruneMonitoring { before_ms: 100_000 }],
    )
    .await;
    assert_eq!(store.fleet_windows(0, i64::MAX).await.unwrap().len(), 1);
}

pub async fn advisories_are_found_by_alias_and_package_and_keep_their_first_sighting(
    b: &dyn Backend,
) {
    let store = b.open().await.expect("open");
    let advisory = |modified: &str, at: i64| Change::UpsertAdvisory {
        record: AdvisoryRecord {
            id: "GHSA-m5pq-gvj9-9vr8".into(),
            modified: modified.into(),
            withdrawn: None,
            summary: "regex".into(),
            severity: Some("HIGH".into()),
            body: b"{\"id\":\"GHSA-m5pq-gvj9-9vr8\"}".to_vec(),
            first_seen_ms: at,
            updated_ms: at,
        },
        ids: vec!["GHSA-m5pq-gvj9-9vr8".into(), "CVE-2022-24713".into()],
        packages: vec![("crates.io".into(), "regex".into())],
    };
    ok(&*store, vec![advisory("2022-03-11T19:58:44Z", 10)]).await;
    ok(&*store, vec![advisory("2023-01-01T00:00:00Z", 20)]).await;
    let named = store.advisories_named("cve-2022-24713").await.unwrap();
    assert_eq!(named.len(), 1);
    assert_eq!(
        (
            named[0].modified.as_str(),
            named[0].first_seen_ms,
            named[0].updated_ms
        ),
        ("2023-01-01T00:00:00Z", 10, 20)
    );
    assert!(!named[0].body.is_empty());
    assert!(store.advisories().await.unwrap()[0].body.is_empty());
    let by_package = store
        .advisories_for(&[
            ("crates.io".into(), "regex".into()),
            ("npm".into(), "regex".into()),
        ])
        .await
        .unwrap();
    assert_eq!(by_package.len(), 1);
    assert!(
        store
            .advisories_named("CVE-2000-1")
            .await
            .unwrap()
            .is_empty()
    );
    // Matches are replaced per advisory and per release.
    ok(&*store, vec![model("m")]).await;
    let hit = |version: &str, component: &str| AdvisoryMatchRecord {
        advisory: "GHSA-m5pq-gvj9-9vr8".into(),
        model: id("m"),
        version: version.into(),
        component: component.into(),
        component_version: "1.5.4".into(),
        why: ">= 0, < 1.5.5".into(),
        fixed: Some("1.5.5".into()),
    };
    ok(
        &*store,
        vec![Change::SetAdvisoryMatches {
            advisory: "GHSA-m5pq-gvj9-9vr8".into(),
            matches: vec![
                hit("1.0", "pkg:cargo/regex@1.5.4"),
                hit("2.0", "pkg:cargo/regex@1.5.4"),
            ],
        }],
    )
    .await;
    ok(
        &*store,
        vec![Change::SetReleaseMatches {
            model: id("m"),
            version: "2.0".into(),
            matches: vec![],
        }],
    )
    .await;
    let left = store
        .advisory_matches(Some("GHSA-m5pq-gvj9-9vr8"))
        .await
        .unwrap();
    assert_eq!(left, vec![hit("1.0", "pkg:cargo/regex@1.5.4")]);
    assert_eq!(store.advisory_matches(None).await.unwrap().len(), 1);
}

fn command(cmd_id: &str, device: &str) -> Change {
    Change::InsertCommand(CommandRecord {
        id: cmd_id.into(),
        device: id(device),
        name: "reboot".into(),
        args: "[]".into(),
        status: "queued".into(),
        created_ms: 1,
        sent_ms: None,
        acked_ms: None,
        result: None,
    })
}

/// An offline device's persistent MQTT session and its retained messages are
/// kept across a reopen; an empty retained payload clears, a clean session
/// discards.
pub async fn mqtt_sessions_and_retained_messages_survive_a_reopen(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let (d1, d2): (DeviceId, DeviceId) = (id("d1"), id("d2"));
    assert_eq!(store.mqtt_session(&d1).await.expect("read"), None);
    let retain = |d: &DeviceId, topic: &str, payload: &[u8]| Change::SetRetained {
        device: d.clone(),
        topic: topic.into(),
        payload: payload.to_vec(),
        at_ms: 5,
    };
    store
        .commit(
            vec![
                Change::SetMqttSession {
                    device: d1.clone(),
                    subscribed: Some(true),
                    at_ms: 5,
                },
                Change::SetMqttSession {
                    device: d2.clone(),
                    subscribed: Some(false),
                    at_ms: 5,
                },
                retain(&d1, "palisade/d/d1/telemetry", b"{\"t\":1}"),
                retain(&d1, "palisade/d/d1/events", &[0, 255, 1]),
                retain(&d1, "palisade/d/d1/telemetry", b"{\"t\":2}"),
                retain(&d2, "palisade/d/d2/telemetry", b"x"),
            ],
            vec![],
        )
        .await
        .expect("commit");
    drop(store);
    let store = b.open().await.expect("reopen");
    assert_eq!(store.mqtt_session(&d1).await.expect("read"), Some(true));
    assert_eq!(store.mqtt_session(&d2).await.expect("read"), Some(false));
    assert_eq!(
        store.retained(&d1).await.expect("read"),
        vec![
            ("palisade/d/d1/events".to_owned(), vec![0, 255, 1]),
            ("palisade/d/d1/telemetry".to_owned(), b"{\"t\":2}".to_vec()),
        ]
    );
    store
        .commit(
            vec![
                Change::SetMqttSession {
                    device: d1.clone(),
                    subscribed: None,
                    at_ms: 6,
                },
                retain(&d1, "palisade/d/d1/events", b""),
            ],
            vec![],
        )
        .await
        .expect("commit");
    assert_eq!(store.mqtt_session(&d1).await.expect("read"), None);
    assert_eq!(store.retained(&d1).await.expect("read").len(), 1);
    assert_eq!(store.retained(&d2).await.expect("read").len(), 1);
}

/// Commands are queued, sent, and closed only by their own device's
/// acknowledgement, once.
pub async fn commands_are_queued_sent_and_acknowledged_by_their_device_only(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![
            model("m"),
            device("a", "m"),
            device("b", "m"),
            command("c1", "a"),
            command("c2", "a"),
            command("c3", "b"),
        ],
    )
    .await;
    let queued: Vec<DeviceId> = store.queued_command_devices().await.expect("read");
    assert_eq!(queued, [id::<DeviceId>("a"), id("b")]);
    ok(
        &*store,
        vec![
            Change::CommandSent {
                id: "c1".into(),
                at_ms: 2,
            },
            Change::CommandSent {
                id: "c3".into(),
                at_ms: 2,
            },
        ],
    )
    .await;
    let ack = |cmd: &str, device: &str| Change::CommandAcked {
        id: cmd.into(),
        device: id(device),
        ok: true,
        result: "\"done\"".into(),
        at_ms: 3,
    };
    assert!(is_conflict(commit(&*store, vec![ack("c1", "b")]).await));
    ok(&*store, vec![ack("c1", "a"), ack("c3", "b")]).await;
    assert!(is_conflict(commit(&*store, vec![ack("c1", "a")]).await));
    let a = store.commands(&id("a"), false).await.expect("read");
    assert_eq!(a.len(), 2);
    let c1 = a.iter().find(|c| c.id == "c1").expect("c1");
    assert_eq!((c1.sent_ms, c1.acked_ms), (Some(2), Some(3)));
    let still = store.commands(&id("a"), true).await.expect("read");
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].id, "c2");
    let queued: Vec<DeviceId> = store.queued_command_devices().await.expect("read");
    assert_eq!(queued, [id::<DeviceId>("a")]);
}

/// A decommissioning is recorded once per device; its pending wipe closes
/// once, and only with the nonce the command carried; clearing it lifts the
/// tombstone.
pub async fn a_pending_wipe_closes_once_with_its_nonce(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let record = |d: &str, wipe: WipeStatus| DecommissionRecord {
        device: id(d),
        actor: "alice".into(),
        reason: "sold".into(),
        requested_ms: 10,
        wipe,
        nonce: (wipe == WipeStatus::Pending).then(|| "n1".to_owned()),
        serial: Some("0a".into()),
        deadline_ms: Some(100),
        completed_ms: None,
        receipt: None,
        destroyed: vec![],
        detail: String::new(),
    };
    ok(
        &*store,
        vec![
            model("m"),
            device("a", "m"),
            device("b", "m"),
            Change::RecordDecommission(record("a", WipeStatus::Pending)),
            Change::RecordDecommission(record("b", WipeStatus::NotRequested)),
        ],
    )
    .await;
    assert!(is_conflict(
        commit(
            &*store,
            vec![Change::RecordDecommission(record(
                "a",
                WipeStatus::NotRequested
            ))]
        )
        .await
    ));
    let pending = store
        .decommissions(Some(WipeStatus::Pending))
        .await
        .expect("read");
    assert_eq!(pending, [record("a", WipeStatus::Pending)]);
    let close = |nonce: &str| Change::CompleteWipe {
        device: id("a"),
        nonce: nonce.into(),
        wipe: WipeStatus::Verified,
        receipt: Some("{}".into()),
        destroyed: vec!["data key".into()],
        detail: "receipt verified".into(),
        at_ms: 50,
    };
    assert!(is_conflict(commit(&*store, vec![close("n2")]).await));
    ok(&*store, vec![close("n1")]).await;
    assert!(is_conflict(commit(&*store, vec![close("n1")]).await));
    let a = store
        .decommission(&id("a"))
        .await
        .expect("read")
        .expect("a");
    assert_eq!(
        (a.wipe, a.completed_ms, a.destroyed.as_slice()),
        (
            WipeStatus::Verified,
            Some(50),
            ["data key".to_owned()].as_slice()
        )
    );
    assert_eq!(store.decommissions(None).await.expect("read").len(), 2);
    ok(&*store, vec![Change::ClearDecommission { device: id("b") }]).await;
    assert_eq!(store.decommission(&id("b")).await.expect("read"), None);
}

/// An advisory's exposure is one figure per day (the last recorded wins),
/// read oldest first; its exploitation is one record, corrected in place.
pub async fn advisory_exposure_is_kept_per_day_and_exploitation_once(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let e = |day: &str, devices: u64| AdvisoryExposureRecord {
        advisory: "GHSA-1".into(),
        day: day.into(),
        devices,
    };
    ok(
        &*store,
        vec![Change::RecordAdvisoryExposure(vec![
            e("2026-12-02", 9),
            e("2026-12-01", 10),
        ])],
    )
    .await;
    ok(
        &*store,
        vec![Change::RecordAdvisoryExposure(vec![e("2026-12-02", 4)])],
    )
    .await;
    assert_eq!(
        store.advisory_exposure("GHSA-1").await.expect("read"),
        [e("2026-12-01", 10), e("2026-12-02", 4)]
    );
    let x = |aware: i64| ExploitationRecord {
        advisory: "GHSA-1".into(),
        aware_ms: aware,
        actor: "alice".into(),
        note: "CISA KEV".into(),
        recorded_ms: 5,
    };
    assert_eq!(store.exploitation("GHSA-1").await.expect("read"), None);
    ok(&*store, vec![Change::MarkExploited(x(1))]).await;
    ok(&*store, vec![Change::MarkExploited(x(2))]).await;
    assert_eq!(
        store.exploitation("GHSA-1").await.expect("read"),
        Some(x(2))
    );
}

/// A release's VEX statements are replaced whole by the next upload, and
/// read per release or all together.
pub async fn a_releases_vex_statements_are_replaced_by_the_next_upload(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let st = |version: &str, vuln: &str, component: Option<&str>| VexRecord {
        model: id("m"),
        version: version.into(),
        vulnerability: vuln.into(),
        component: component.map(str::to_owned),
        status: "not_affected".into(),
        justification: Some("code_not_present".into()),
        detail: "d".into(),
        supplier: "acme".into(),
        document_sha256: "00".into(),
        uploaded_ms: 1,
    };
    let set = |version: &str, statements: Vec<VexRecord>| Change::SetReleaseVex {
        model: id("m"),
        version: version.into(),
        statements,
    };
    ok(
        &*store,
        vec![
            set(
                "1.0",
                vec![
                    st("1.0", "CVE-1", None),
                    st("1.0", "CVE-2", Some("pkg:pypi/a@1")),
                ],
            ),
            set("2.0", vec![st("2.0", "CVE-1", None)]),
        ],
    )
    .await;
    assert_eq!(store.vex_statements(None).await.expect("read").len(), 3);
    ok(&*store, vec![set("1.0", vec![st("1.0", "CVE-3", None)])]).await;
    let one = store
        .vex_statements(Some((&id("m"), "1.0")))
        .await
        .expect("read");
    assert_eq!(one, [st("1.0", "CVE-3", None)]);
    let all = store.vex_statements(None).await.expect("read");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].component, None);
}

/// A model's support policy is set and reset without losing the stage it
/// reached; the stage moves only from the stage the caller saw.
pub async fn support_policies_keep_their_stage_and_move_it_by_compare_and_set(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let policy = |days: u32, at: i64| Change::SetSupportPolicy {
        model: id("m"),
        support_until_ms: Some(1_000),
        notify_days: days,
        restrict_ms: Some(2_000),
        retire_ms: None,
        retire_wipe: true,
        at_ms: at,
    };
    ok(&*store, vec![model("m"), policy(30, 5)]).await;
    assert!(matches!(
        commit(
            &*store,
            vec![Change::SetSupportPolicy {
                model: id("nope"),
                support_until_ms: None,
                notify_days: 1,
                restrict_ms: None,
                retire_ms: None,
                retire_wipe: false,
                at_ms: 1,
            }]
        )
        .await,
        Err(StoreError::NotFound { .. })
    ));
    let step = |from: SupportStage, to: SupportStage| Change::SetSupportStage {
        model: id("m"),
        expected: from,
        to,
        at_ms: 7,
    };
    ok(
        &*store,
        vec![step(SupportStage::Supported, SupportStage::Notified)],
    )
    .await;
    assert!(is_conflict(
        commit(
            &*store,
            vec![step(SupportStage::Supported, SupportStage::Restricted)]
        )
        .await
    ));
    ok(&*store, vec![policy(60, 9)]).await;
    let p = store.support_policies().await.expect("read");
    assert_eq!(p.len(), 1);
    assert_eq!(
        (
            p[0].notify_days,
            p[0].stage,
            p[0].stage_ms,
            p[0].retire_wipe,
            p[0].updated_ms
        ),
        (60, SupportStage::Notified, Some(7), true, 9)
    );
    let m = store.model(&id("m")).await.expect("read").expect("m");
    assert_eq!(m.support_until_ms, Some(1_000));
}

/// Suppliers, their keys, batches, TPM vendors and firmware read back as
/// written; an enrolment token is consumed once and only before it expires.
pub async fn onboarding_records_round_trip_and_enrolment_tokens_are_single_use(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let supplier = SupplierRecord {
        name: id::<SupplierName>("acme"),
        ca_der: vec![1, 2],
        ca_sha256: "aa".repeat(32),
        disclosure_contact: None,
        created_ms: 1,
    };
    let token = |tid: &str, expires_ms| {
        Change::InsertEnrollmentToken(EnrollmentTokenRecord {
            id: tid.into(),
            model: id("m"),
            secret_hash: [3; 32],
            created_ms: 1,
            expires_ms,
            used_ms: None,
            used_device: None,
        })
    };
    ok(
        &*store,
        vec![
            model("m"),
            Change::InsertSupplier(supplier.clone()),
            Change::InsertSupplierKey(SupplierKeyRecord {
                keyid: "k1".into(),
                supplier: id("acme"),
                spki_der: vec![9],
                created_ms: 2,
            }),
            Change::InsertBatch(BatchRecord {
                id: "batch-1".into(),
                supplier: id("acme"),
                model: id("m"),
                device_count: 2,
                imported_ms: 3,
            }),
            Change::InsertTpmVendor(TpmVendorRecord {
                sha256: "bb".repeat(32),
                subject: "CN=TPM CA".into(),
                ca_der: vec![4],
                created_ms: 4,
            }),
            Change::InsertFirmware(FirmwareRecord {
                model: id("m"),
                version: "1.0".into(),
                sha256: "cc".repeat(32),
                created_ms: 5,
            }),
            token("t1", 1_000),
            token("t2", 10),
        ],
    )
    .await;
    assert_eq!(
        store.supplier(&id("acme")).await.expect("read"),
        Some(supplier.clone())
    );
    assert_eq!(store.suppliers().await.expect("read").len(), 1);
    // The disclosure contact is recorded, read back and cleared.
    ok(
        &*store,
        vec![Change::SetSupplierContact {
            name: id("acme"),
            contact: Some("mailto:psirt@acme.example".into()),
        }],
    )
    .await;
    assert_eq!(
        store
            .supplier(&id("acme"))
            .await
            .expect("read")
            .and_then(|s| s.disclosure_contact)
            .as_deref(),
        Some("mailto:psirt@acme.example")
    );
    ok(
        &*store,
        vec![Change::SetSupplierContact {
            name: id("acme"),
            contact: None,
        }],
    )
    .await;
    assert_eq!(
        store.supplier(&id("acme")).await.expect("read"),
        Some(supplier.clone())
    );
    assert_eq!(
        store.supplier_keys(&id("acme")).await.expect("read").len(),
        1
    );
    assert_eq!(
        store
            .batch("batch-1")
            .await
            .expect("read")
            .map(|b| b.device_count),
        Some(2)
    );
    assert_eq!(store.tpm_vendors().await.expect("read").len(), 1);
    assert_eq!(store.firmware(&id("m")).await.expect("read").len(), 1);
    let consume = |tid: &str, device: &str, at_ms| Change::ConsumeEnrollmentToken {
        id: tid.into(),
        device: id(device),
        at_ms,
    };
    ok(&*store, vec![device("d1", "m"), consume("t1", "d1", 100)]).await;
    assert!(is_conflict(
        commit(&*store, vec![consume("t1", "d1", 101)]).await
    ));
    assert!(is_conflict(
        commit(&*store, vec![consume("t2", "d1", 100)]).await
    ));
    let t1 = store
        .enrollment_token("t1")
        .await
        .expect("read")
        .expect("t1");
    assert_eq!(
        (t1.used_ms, t1.used_device.as_deref()),
        (Some(100), Some("d1"))
    );
}

fn release(version: &str, security_version: u64) -> Change {
    Change::InsertRelease(ReleaseRecord {
        model: id("m"),
        version: version.into(),
        security_version,
        hardware: vec!["rev-a".into(), "rev-b".into()],
        image_sha256: "ee".repeat(32),
        image_len: 4096,
        sbom_sha256: "11".repeat(32),
        provenance_sha256: "22".repeat(32),
        signed_by: "k1".into(),
        builder_id: "https://builder.example".into(),
        uploaded_by: "supplier:acme".into(),
        created_ms: 1,
    })
}

/// A model's security version never goes down; a device's assignment counter
/// only goes up; update reports keep the newest counter.
pub async fn releases_never_lower_the_security_version_and_assignments_only_move_forward(
    b: &dyn Backend,
) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![model("m"), device("d", "m"), release("1.0", 2)],
    )
    .await;
    assert!(is_conflict(commit(&*store, vec![release("0.9", 1)]).await));
    ok(&*store, vec![release("1.1", 2)]).await;
    let releases = store.releases(Some(&id("m"))).await.expect("read");
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[0].hardware, ["rev-a", "rev-b"]);
    let assign = |counter| Change::SetAssignment {
        device: id("d"),
        counter,
        signed: format!("{{\"counter\":{counter}}}"),
        at_ms: 5,
    };
    ok(&*store, vec![assign(1)]).await;
    ok(&*store, vec![assign(2)]).await;
    assert!(is_conflict(commit(&*store, vec![assign(2)]).await));
    assert!(is_conflict(commit(&*store, vec![assign(1)]).await));
    assert_eq!(
        store.assignment(&id("d")).await.expect("read").map(|a| a.0),
        Some(2)
    );
    let report = |counter, state| {
        Change::RecordUpdate(UpdateRecord {
            device: id("d"),
            counter,
            target: "m/1.1.img".into(),
            state,
            detail: String::new(),
            updated_ms: 6,
        })
    };
    ok(&*store, vec![report(2, UpdateState::Downloading)]).await;
    ok(&*store, vec![report(2, UpdateState::RolledBack)]).await;
    // A late report about an older assignment does not overwrite a newer one.
    ok(&*store, vec![report(1, UpdateState::Committed)]).await;
    let u = store.updates(Some(&id("d"))).await.expect("read");
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].counter, u[0].state), (2, UpdateState::RolledBack));
}

/// A rollout, its state changes and its devices read back as written.
pub async fn rollouts_and_their_devices_round_trip(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let name: RolloutName = id("canary-1");
    ok(
        &*store,
        vec![
            model("m"),
            device("d1", "m"),
            device("d2", "m"),
            release("1.0", 1),
            Change::InsertRollout(RolloutRecord {
                name: name.clone(),
                model: id("m"),
                release_version: "1.0".into(),
                spec: "{\"waves\":[\"1\",\"100%\"]}".into(),
                state: RolloutState::Running,
                wave: 0,
                reason: String::new(),
                created_by: "operator:alice".into(),
                created_ms: 1,
                updated_ms: 1,
            }),
        ],
    )
    .await;
    let member = |device: &str, wave, state| RolloutDeviceRecord {
        rollout: name.clone(),
        device: id(device),
        wave,
        state,
        counter: 0,
        detail: String::new(),
        updated_ms: 2,
    };
    ok(
        &*store,
        vec![Change::UpsertRolloutDevices(vec![
            member("d1", 0, RolloutDeviceState::Assigned),
            member("d2", 1, RolloutDeviceState::Pending),
        ])],
    )
    .await;
    ok(
        &*store,
        vec![
            Change::UpsertRolloutDevices(vec![member("d1", 0, RolloutDeviceState::Failed)]),
            Change::SetRolloutState {
                name: name.clone(),
                state: RolloutState::Paused,
                wave: 0,
                reason: "failure threshold".into(),
                at_ms: 3,
            },
        ],
    )
    .await;
    let missing = commit(
        &*store,
        vec![Change::SetRolloutState {
            name: id("nope"),
            state: RolloutState::Cancelled,
            wave: 0,
            reason: String::new(),
            at_ms: 4,
        }],
    )
    .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    let r = store.rollouts().await.expect("read");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].state, r[0].reason.as_str()),
        (RolloutState::Paused, "failure threshold")
    );
    let members = store.rollout_devices(&name).await.expect("read");
    let states: Vec<(String, RolloutDeviceState)> = members
        .iter()
        .map(|m| (m.device.to_string(), m.state))
        .collect();
    assert_eq!(
        states,
        [
            ("d1".to_string(), RolloutDeviceState::Failed),
            ("d2".to_string(), RolloutDeviceState::Pending)
        ]
    );
}

/// Model policies, sites, placements and edges are upserted and read back by site.
pub async fn sites_placements_and_edges_round_trip(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let site = |name: &str, spec: &str, at| {
        Change::UpsertSite(SiteRecord {
            name: id(name),
            spec: spec.into(),
            created_ms: at,
            updated_ms: at,
        })
    };
    let place = |device: &str, site: &str, address: &str| {
        Change::SetPlacement(PlacementRecord {
            device: id(device),
            site: id(site),
            segment: "cams".into(),
            address: address.into(),
            overrides: "{}".into(),
            updated_ms: 3,
        })
    };
    ok(
        &*store,
        vec![
            model("m"),
            device("d1", "m"),
            device("d2", "m"),
            device("edge-1", "m"),
            site("lab", "{\"v\":1}", 1),
            site("plant", "{}", 1),
            place("d1", "lab", "10.0.0.2"),
            place("d2", "plant", "10.1.0.2"),
            Change::SetEdge {
                device: id("edge-1"),
                site: id("lab"),
                at_ms: 4,
            },
            Change::SetModelPolicy(ModelPolicyRecord {
                model: id("m"),
                mud_url: "https://mud.example/m.json".into(),
                mud: "{}".into(),
                policy: "{}".into(),
                signed_by: String::new(),
                open_override: false,
                updated_ms: 5,
            }),
        ],
    )
    .await;
    ok(
        &*store,
        vec![
            site("lab", "{\"v\":2}", 9),
            place("d2", "lab", "10.0.0.3"),
            Change::RecordEdgeStatus {
                device: id("edge-1"),
                applied_version: 7,
                status: "{\"error\":\"\"}".into(),
                at_ms: 10,
            },
        ],
    )
    .await;
    let sites = store.sites().await.expect("read");
    let lab = sites
        .iter()
        .find(|s| s.name.as_str() == "lab")
        .expect("lab");
    assert_eq!(
        (lab.spec.as_str(), lab.created_ms, lab.updated_ms),
        ("{\"v\":2}", 1, 9)
    );
    let lab_id: SiteName = id("lab");
    let at_lab = store.placements(Some(&lab_id)).await.expect("read");
    assert_eq!(at_lab.len(), 2, "d2 moved to the lab");
    assert_eq!(store.placements(None).await.expect("read").len(), 2);
    let edges = store.edges(Some(&lab_id)).await.expect("read");
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].applied_version, 7);
    assert!(
        store
            .model_policy(&id::<ModelId>("m"))
            .await
            .expect("read")
            .is_some()
    );
}

/// Sightings of an address that is no enrolled device merge into one row
/// per (site, address): first and last seen, traffic summed, sources unioned,
/// a known MAC or host name kept; the operator's decision sticks across later
/// sightings, undecided hosts are listed first, and deciding about an
/// address never seen is refused.
pub async fn unmanaged_hosts_merge_their_sightings_and_keep_the_operators_decision(
    b: &dyn Backend,
) {
    let store = b.open().await.expect("open");
    let lab: SiteName = id("lab");
    let seen = |address: &str, source: &str, at_ms, bytes, mac: Option<&str>| UnmanagedSighting {
        site: id("lab"),
        address: address.into(),
        mac: mac.map(str::to_owned),
        hostname: None,
        source: source.into(),
        at_ms,
        bytes,
    };
    ok(
        &*store,
        vec![
            Change::UpsertSite(SiteRecord {
                name: id("lab"),
                spec: "{}".into(),
                created_ms: 1,
                updated_ms: 1,
            }),
            Change::RecordUnmanaged(vec![
                seen("10.0.0.50", "flows", 100, 4000, None),
                seen("10.0.0.51", "neighbours", 110, 0, Some("02:00:00:00:00:51")),
            ]),
        ],
    )
    .await;
    ok(
        &*store,
        vec![Change::RecordUnmanaged(vec![
            seen("10.0.0.50", "neighbours", 90, 0, Some("02:00:00:00:00:50")),
            seen("10.0.0.50", "flows", 300, 1000, None),
            seen("10.0.0.50", "flows", 200, 0, None),
        ])],
    )
    .await;
    let hosts = store.unmanaged(Some(&lab), None).await.expect("read");
    assert_eq!(hosts.len(), 2);
    let h = &hosts[0];
    assert_eq!(h.address, "10.0.0.50", "newest last-seen first");
    assert_eq!((h.first_ms, h.last_ms, h.bytes), (90, 300, 5000));
    assert_eq!(h.sources, vec!["flows".to_owned(), "neighbours".to_owned()]);
    assert_eq!(h.mac.as_deref(), Some("02:00:00:00:00:50"));
    assert_eq!(h.state, UnmanagedState::Seen);
    assert_eq!(h.decided, None);

    ok(
        &*store,
        vec![Change::SetUnmanagedState {
            site: id("lab"),
            address: "10.0.0.50".into(),
            state: UnmanagedState::Blocked,
            device: None,
            actor: "alice".into(),
            at_ms: 400,
        }],
    )
    .await;
    ok(
        &*store,
        vec![Change::RecordUnmanaged(vec![seen(
            "10.0.0.50",
            "flows",
            500,
            10,
            None,
        )])],
    )
    .await;
    let hosts = store.unmanaged(None, None).await.expect("read");
    assert_eq!(hosts[0].address, "10.0.0.51", "undecided hosts come first");
    let blocked = &hosts[1];
    assert_eq!(
        blocked.state,
        UnmanagedState::Blocked,
        "a later sighting keeps the decision"
    );
    assert_eq!(blocked.decided, Some(("alice".to_owned(), 400)));
    assert_eq!(blocked.last_ms, 500);

    let never_seen = commit(
        &*store,
        vec![Change::SetUnmanagedState {
            site: id("lab"),
            address: "10.0.0.99".into(),
            state: UnmanagedState::Blocked,
            device: None,
            actor: "alice".into(),
            at_ms: 600,
        }],
    )
    .await;
    assert!(
        matches!(never_seen, Err(StoreError::NotFound { .. })),
        "deciding about an address never seen: {never_seen:?}"
    );
    let other: SiteName = id("plant");
    assert!(
        store
            .unmanaged(Some(&other), None)
            .await
            .expect("read")
            .is_empty()
    );
    let only_blocked = store
        .unmanaged(Some(&lab), Some(UnmanagedState::Blocked))
        .await
        .expect("read");
    assert_eq!(only_blocked.len(), 1);
    assert_eq!(only_blocked[0].address, "10.0.0.50");
}

fn alert(alert_id: &str, device: &str, last_ms: i64) -> Change {
    Change::OpenAlert(AlertRecord {
        id: alert_id.into(),
        dedup_key: format!("scan:{device}"),
        detector: "scan".into(),
        severity: "high".into(),
        device: Some(device.into()),
        peer: None,
        state: AlertState::Open,
        summary: "a scan".into(),
        evidence: "{}".into(),
        last_evidence: "{}".into(),
        count: 1,
        first_ms: last_ms,
        last_ms,
        acked_by: None,
        acked_ms: None,
        resolved_by: None,
        resolved_ms: None,
        note: String::new(),
        responses: "[]".into(),
    })
}

/// Alerts are bumped while open, acknowledged and resolved only from the
/// states that allow it (notes accumulate), and resolved ones are pruned.
pub async fn alerts_move_through_their_lifecycle_and_resolved_ones_are_pruned(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![alert("al-1", "d1", 10), alert("al-2", "d2", 10)],
    )
    .await;
    ok(
        &*store,
        vec![Change::BumpAlert {
            id: "al-1".into(),
            count: 4,
            last_ms: 20,
            last_evidence: "{\"n\":5}".into(),
        }],
    )
    .await;
    let set = |to, from: Vec<AlertState>, note: &str| Change::SetAlertState {
        id: "al-1".into(),
        from,
        to,
        by: "operator:alice".into(),
        at_ms: 30,
        note: note.into(),
    };
    assert!(is_conflict(
        commit(
            &*store,
            vec![set(
                AlertState::Acknowledged,
                vec![AlertState::Acknowledged],
                ""
            )]
        )
        .await
    ));
    ok(
        &*store,
        vec![set(
            AlertState::Acknowledged,
            vec![AlertState::Open],
            "looking",
        )],
    )
    .await;
    ok(
        &*store,
        vec![set(
            AlertState::Resolved,
            vec![AlertState::Open, AlertState::Acknowledged],
            "a pentest",
        )],
    )
    .await;
    let a = store.alert("al-1").await.expect("read").expect("al-1");
    assert_eq!((a.state, a.count, a.last_ms), (AlertState::Resolved, 5, 20));
    assert_eq!(a.note, "looking\na pentest");
    assert_eq!(a.resolved_by.as_deref(), Some("operator:alice"));
    let open = store
        .alerts(&AlertFilter {
            state: Some(AlertState::Open),
            limit: 100,
            ..AlertFilter::default()
        })
        .await
        .expect("read");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, "al-2");
    ok(&*store, vec![Change::PruneMonitoring { before_ms: 25 }]).await;
    assert!(store.alert("al-1").await.expect("read").is_none());
    assert!(
        store.alert("al-2").await.expect("read").is_some(),
        "open alerts are kept"
    );
}

/// Timeline events come back in time order within the range, and are pruned.
pub async fn timeline_events_are_kept_in_order_and_pruned(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let event = |at_ms, kind: &str| DeviceEventRecord {
        device: "d1".into(),
        at_ms,
        kind: kind.into(),
        summary: kind.into(),
        detail: "{}".into(),
    };
    ok(
        &*store,
        vec![Change::RecordDeviceEvents(vec![
            event(30, "disconnected"),
            event(10, "connected"),
            event(20, "firmware"),
        ])],
    )
    .await;
    let kinds = |list: Vec<DeviceEventRecord>| -> Vec<String> {
        list.into_iter().map(|e| e.kind).collect()
    };
    assert_eq!(
        kinds(store.device_events("d1", 0, 100, 10).await.expect("read")),
        ["connected", "firmware", "disconnected"]
    );
    assert_eq!(
        kinds(store.device_events("d1", 15, 25, 10).await.expect("read")),
        ["firmware"]
    );
    assert!(
        store
            .device_events("d2", 0, 100, 10)
            .await
            .expect("read")
            .is_empty()
    );
    ok(&*store, vec![Change::PruneMonitoring { before_ms: 25 }]).await;
    assert_eq!(
        kinds(store.device_events("d1", 0, 100, 10).await.expect("read")),
        ["disconnected"]
    );
}

/// Each device's newest event of a kind, one per device.
pub async fn the_newest_event_of_a_kind_is_found_per_device(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let event = |device: &str, at_ms, kind: &str, summary: &str| DeviceEventRecord {
        device: device.into(),
        at_ms,
        kind: kind.into(),
        summary: summary.into(),
        detail: "{}".into(),
    };
    ok(
        &*store,
        vec![Change::RecordDeviceEvents(vec![
            event("d1", 10, "connected", "from 10.0.0.2"),
            event("d1", 30, "connected", "from 10.0.0.9"),
            event("d1", 40, "disconnected", "gone"),
            event("d2", 20, "connected", "from 10.0.0.3"),
        ])],
    )
    .await;
    let latest = store.latest_device_events("connected").await.expect("read");
    let got: Vec<(String, i64, String)> = latest
        .into_iter()
        .map(|e| (e.device, e.at_ms, e.summary))
        .collect();
    assert_eq!(
        got,
        [
            ("d1".to_string(), 30, "from 10.0.0.9".to_string()),
            ("d2".to_string(), 20, "from 10.0.0.3".to_string())
        ]
    );
}

/// Entries are found by action, in log order, with their subject and detail.
pub async fn audit_entries_are_found_by_action(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    store
        .commit(
            vec![],
            vec![
                EntryDraft::success("op", "device.register", "d1"),
                EntryDraft::success("d1", "est.enroll", "d1")
                    .with_detail(serde_json::json!({ "method": "token" })),
                EntryDraft::success("op", "model.add", "m"),
                EntryDraft::success("d2", "est.enroll", "d2"),
            ],
        )
        .await
        .expect("commit");
    let refs = store
        .audit_refs(&["est.enroll", "device.register"])
        .await
        .expect("read");
    let got: Vec<(u64, &str, &str)> = refs
        .iter()
        .map(|r| (r.index, r.subject.as_str(), r.action.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "d1", "device.register"),
            (1, "d1", "est.enroll"),
            (3, "d2", "est.enroll")
        ]
    );
    assert!(refs[1].detail.contains("token"));
}

/// A day's snapshot is replaced by a later evaluation of the same day, and
/// read back by framework and scope from a day on.
pub async fn posture_snapshots_are_replaced_per_day_and_read_by_scope(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let snap = |day: &str, scope: &str, pass| PostureSnapshotRecord {
        day: day.into(),
        framework: "checklist".into(),
        scope: scope.into(),
        pass,
        fail: 2,
        unknown: 1,
        not_assessable: 0,
        devices: 3,
    };
    ok(
        &*store,
        vec![Change::RecordPostureSnapshots(vec![
            snap("2026-12-01", "fleet", 10),
            snap("2026-12-02", "fleet", 11),
            snap("2026-12-02", "model:cam", 5),
        ])],
    )
    .await;
    ok(
        &*store,
        vec![Change::RecordPostureSnapshots(vec![snap(
            "2026-12-02",
            "fleet",
            15,
        )])],
    )
    .await;
    let fleet = store
        .posture_snapshots("checklist", "fleet", "2026-12-01")
        .await
        .expect("read");
    let got: Vec<(&str, u64)> = fleet.iter().map(|p| (p.day.as_str(), p.pass)).collect();
    assert_eq!(got, [("2026-12-01", 10), ("2026-12-02", 15)]);
    let since = store
        .posture_snapshots("checklist", "fleet", "2026-12-02")
        .await
        .expect("read");
    assert_eq!(since.len(), 1);
    assert!(
        store
            .posture_snapshots("nist-ir-8259a", "fleet", "2000-01-01")
            .await
            .expect("read")
            .is_empty()
    );
}

fn account(name: &str) -> Change {
    Change::InsertAccount(AccountRecord {
        name: id(name),
        role: Role::Operator,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_ms: 1,
        updated_ms: 1,
        disabled_ms: None,
    })
}

fn session(hash: u8, operator: &str) -> Change {
    Change::InsertSession(SessionRecord {
        id_hash: [hash; 32],
        operator: id(operator),
        csrf: format!("csrf-{hash}"),
        address: "127.0.0.1".into(),
        created_ms: 10,
        last_seen_ms: 10,
        expires_ms: 1_000,
        revoked_ms: None,
    })
}

/// Accounts are unique by name, updated only while enabled; disabling one
/// revokes all of its sessions; a session is touched and signed out.
pub async fn disabling_an_account_revokes_its_sessions(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    ok(&*store, vec![account("alice"), account("bob")]).await;
    assert!(is_conflict(commit(&*store, vec![account("alice")]).await));
    ok(
        &*store,
        vec![
            session(1, "alice"),
            session(2, "alice"),
            session(3, "bob"),
            Change::TouchSession {
                id_hash: [1; 32],
                at_ms: 50,
            },
            Change::TouchSession {
                id_hash: [1; 32],
                at_ms: 40,
            },
            Change::RevokeSession {
                id_hash: [3; 32],
                at_ms: 60,
            },
            Change::UpdateAccount {
                name: id("alice"),
                password_hash: None,
                role: Some(Role::Admin),
                at_ms: 70,
            },
        ],
    )
    .await;
    let s1 = store.session(&[1; 32]).await.expect("read").expect("s1");
    assert_eq!((s1.last_seen_ms, s1.csrf.as_str()), (50, "csrf-1"));
    assert_eq!(
        store
            .session(&[3; 32])
            .await
            .expect("read")
            .and_then(|s| s.revoked_ms),
        Some(60)
    );
    let alice = store
        .account(&id("alice"))
        .await
        .expect("read")
        .expect("alice");
    assert_eq!((alice.role, alice.updated_ms), (Role::Admin, 70));
    ok(
        &*store,
        vec![Change::DisableAccount {
            name: id("alice"),
            at_ms: 80,
        }],
    )
    .await;
    for h in [1, 2] {
        let s = store
            .session(&[h; 32])
            .await
            .expect("read")
            .expect("session");
        assert_eq!(s.revoked_ms, Some(80), "session {h}");
    }
    assert!(is_conflict(
        commit(
            &*store,
            vec![Change::DisableAccount {
                name: id("alice"),
                at_ms: 81,
            }]
        )
        .await
    ));
    assert!(is_conflict(
        commit(
            &*store,
            vec![Change::UpdateAccount {
                name: id("alice"),
                password_hash: Some("x".into()),
                role: None,
                at_ms: 82,
            }]
        )
        .await
    ));
    let all = store.accounts().await.expect("read");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].disabled_ms, Some(80));
    assert!(store.session(&[9; 32]).await.expect("read").is_none());
}

/// A device group is saved by name and replaced by a later save.
pub async fn device_groups_are_saved_by_name(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let group = |q: &str| {
        Change::SaveDeviceGroup(DeviceGroupRecord {
            name: "lab cams".into(),
            query: q.into(),
            created_by: "alice".into(),
            created_ms: 1,
        })
    };
    ok(&*store, vec![group("model=cam&site=lab")]).await;
    ok(&*store, vec![group("model=cam&site=lab&state=active")]).await;
    let groups = store.device_groups().await.expect("read");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].query, "model=cam&site=lab&state=active");
}

/// The device list: search, filters, sorts and pages, with the total count.
pub async fn the_device_list_filters_sorts_and_pages_on_the_server(b: &dyn Backend) {
    let store = b.open().await.expect("open");
    let mut changes = vec![model("cam"), model("lock")];
    for i in 0..25 {
        changes.push(device(&format!("cam-{i:02}"), "cam"));
    }
    changes.push(device("lock-a", "lock"));
    changes.push(device("lock_b", "lock"));
    changes.push(Change::UpsertSite(SiteRecord {
        name: id("lab"),
        spec: "{}".into(),
        created_ms: 1,
        updated_ms: 1,
    }));
    for i in 0..5 {
        changes.push(Change::SetPlacement(PlacementRecord {
            device: id(&format!("cam-{i:02}")),
            site: id("lab"),
            segment: "cams".into(),
            address: format!("10.0.0.{i}"),
            overrides: "{}".into(),
            updated_ms: 2,
        }));
    }
    changes.push(Change::RecordPresence(vec![
        (id("cam-03"), 500, Some("2.0".into())),
        (id("cam-07"), 900, Some("1.0".into())),
    ]));
    ok(&*store, changes).await;
    let q = |f: &dyn Fn(&mut DevicePageQuery)| {
        let mut q = DevicePageQuery {
            limit: 10,
            ..DevicePageQuery::default()
        };
        f(&mut q);
        q
    };
    let ids = |p: &DevicePage| -> Vec<String> {
        p.rows.iter().map(|r| r.device.id.to_string()).collect()
    };
    let all = store.device_page(&q(&|_| {})).await.expect("read");
    assert_eq!(all.total, 27);
    assert_eq!(all.rows.len(), 10);
    assert_eq!(all.rows[0].device.id.as_str(), "cam-00");
    let third = store
        .device_page(&q(&|q| q.offset = 20))
        .await
        .expect("read");
    assert_eq!(
        ids(&third),
        [
            "cam-20", "cam-21", "cam-22", "cam-23", "cam-24", "lock-a", "lock_b"
        ]
    );
    let past = store
        .device_page(&q(&|q| q.offset = 1_000_000_000))
        .await
        .expect("read");
    assert!(past.rows.is_empty());
    assert_eq!(past.total, 27);
    // A search is a substring of the id, and '_' is no wildcard.
    let search = store
        .device_page(&q(&|q| q.search = Some("K_B".into())))
        .await
        .expect("read");
    assert_eq!(ids(&search), ["lock_b"]);
    let lab = store
        .device_page(&q(&|q| q.site = Some("lab".into())))
        .await
        .expect("read");
    assert_eq!(lab.total, 5);
    assert_eq!(lab.rows[0].address.as_deref(), Some("10.0.0.0"));
    let unplaced = store
        .device_page(&q(&|q| {
            q.site = Some(String::new());
            q.model = Some(id("lock"));
        }))
        .await
        .expect("read");
    assert_eq!(unplaced.total, 2);
    let seen = store
        .device_page(&q(&|q| {
            q.seen_since = Some((true, 600));
        }))
        .await
        .expect("read");
    assert_eq!(ids(&seen), ["cam-07"]);
    let silent = store
        .device_page(&q(&|q| q.seen_since = Some((false, 600))))
        .await
        .expect("read");
    assert_eq!(silent.total, 26);
    let newest = store
        .device_page(&q(&|q| {
            q.sort = DeviceSort::LastSeen;
            q.descending = true;
            q.limit = 2;
        }))
        .await
        .expect("read");
    assert_eq!(ids(&newest), ["cam-07", "cam-03"]);
    let firmware = store
        .device_page(&q(&|q| q.firmware = Some("2.0".into())))
        .await
        .expect("read");
    assert_eq!(ids(&firmware), ["cam-03"]);
    let only = store
        .device_page(&q(&|q| {
            q.only = Some(vec!["lock-a".into(), "cam-09".into(), "nope".into()])
        }))
        .await
        .expect("read");
    assert_eq!(ids(&only), ["cam-09", "lock-a"]);
    let by_state = store
        .device_page(&q(&|q| q.state = Some(DeviceState::Active)))
        .await
        .expect("read");
    assert_eq!(by_state.total, 0);
}

/// Devices are counted by model and state; valid certificates expiring
/// before a time are found soonest first.
pub async fn devices_are_counted_by_model_and_state_and_expiring_certificates_found(
    b: &dyn Backend,
) {
    let store = b.open().await.expect("open");
    ok(
        &*store,
        vec![
            model("cam"),
            device("a", "cam"),
            device("b", "cam"),
            cert("01", "a", 5_000),
            cert("02", "a", 1_000),
            cert("03", "b", 90_000),
        ],
    )
    .await;
    ok(
        &*store,
        vec![
            Change::SetDeviceState {
                id: id("b"),
                expected: DeviceState::Registered,
                to: DeviceState::Enrolled,
                at_ms: 2,
            },
            Change::RevokeCertificate {
                serial: "01".into(),
                reason: "superseded".into(),
                at_ms: 3,
            },
        ],
    )
    .await;
    let counts = store.device_counts().await.expect("read");
    let got: Vec<(String, DeviceState, u64)> = counts
        .into_iter()
        .map(|(m, s, n)| (m.to_string(), s, n))
        .collect();
    assert_eq!(
        got,
        [
            ("cam".to_string(), DeviceState::Enrolled, 1),
            ("cam".to_string(), DeviceState::Registered, 1)
        ]
    );
    let soon: Vec<String> = store
        .certificates_expiring(10_000, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(soon, ["02"], "revoked and later ones are left out");
}
