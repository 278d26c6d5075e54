//! The store on PostgreSQL: the backend conformance suite (what every backend
//! must do) against a real server, each check in a database of its own, then
//! what only a server can show.
//!
//! The server comes from `PALISADE_TEST_POSTGRES_URL` (an account that may
//! create databases; `scripts/test.sh` starts one with `initdb`/`pg_ctl` and
//! sets it). Without it the checks are skipped with a reason, except under
//! `CI=true`, where a missing server is a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use palisade_audit::EntryDraft;
use palisade_core::KeyAlgorithm;
use palisade_core::clock::FixedClock;
use palisade_keystore::SoftwareKey;
use palisade_store::conformance::Backend;
use palisade_store::*;
use sqlx::{Connection, Executor};
use time::macros::datetime;

/// A database of its own on the test server, with a fresh audit key; `None`
/// (skipped) when no server was given outside CI.
struct Postgres {
    url: String,
    audit: AuditConfig,
}

fn server_url() -> Option<String> {
    match std::env::var("PALISADE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "PALISADE_TEST_POSTGRES_URL is not set: scripts/test.sh starts PostgreSQL and sets it"
            )
        }
        _ => {
            eprintln!(
                "skipped: PALISADE_TEST_POSTGRES_URL is not set (run scripts/test.sh, which starts PostgreSQL)"
            );
            None
        }
    }
}

async fn postgres() -> Option<Postgres> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let server = server_url()?;
    let name = format!(
        "palisade_test_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let url = palisade_store::conformance::postgres_database(&server, &name)
        .await
        .expect("creating a test database");
    let (key, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "audit").unwrap();
    Some(Postgres {
        url,
        audit: AuditConfig {
            origin: "test.invalid/audit".into(),
            key_name: "test.invalid/audit".into(),
            signer: Arc::new(key),
        },
    })
}

#[async_trait(?Send)]
impl Backend for Postgres {
    async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        let store = SqlStore::open_database(
            &self.url.parse()?,
            PoolSettings::default(),
            self.audit.clone(),
            Arc::new(FixedClock(datetime!(2026-11-26 12:00 UTC))),
        )
        .await?;
        assert_eq!(store.engine(), Engine::Postgres);
        Ok(Arc::new(store))
    }

    fn audit(&self) -> &AuditConfig {
        &self.audit
    }

    async fn tamper(&self, sql: &str) {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

palisade_store::conformance_suite!(optional postgres().await);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_to_one_log_that_verifies() {
    let Some(pg) = postgres().await else { return };
    let (a, b) = (pg.open().await.unwrap(), pg.open().await.unwrap());
    // Interleaved and concurrent appends from both stores (two nodes).
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .commit(
                    vec![],
                    vec![EntryDraft::success("node", "test.append", format!("{i}"))],
                )
                .await
                .unwrap()
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        indices.extend(t.await.unwrap().audit_indices);
    }
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..40).collect::<Vec<u64>>(),
        "one sequence, no gaps or forks"
    );
    // A third node loads the whole log and checks it against the newest
    // signed checkpoint; its proofs verify.
    let c = pg.open().await.unwrap();
    let head = c.audit_head().unwrap();
    assert_eq!(head.size, 40);
    let verifier = pg.audit.verifier().unwrap();
    let cp = verifier.verify(&head.note, None).unwrap();
    for i in [0, 17, 39] {
        let p = c.inclusion_proof(i).await.unwrap();
        palisade_audit::verify_inclusion(&p.entry.entry.digest(), i, cp.size, &cp.root, &p.path)
            .unwrap();
    }
    // And each writer continues the same tree after the other wrote.
    let r = a
        .commit(
            vec![],
            vec![EntryDraft::success("node", "test.append", "a")],
        )
        .await
        .unwrap();
    assert_eq!(r.audit_indices, vec![40]);
    let r = b
        .commit(
            vec![],
            vec![EntryDraft::success("node", "test.append", "b")],
        )
        .await
        .unwrap();
    assert_eq!(r.audit_indices, vec![41]);
    assert_eq!(r.checkpoint_size, 42);
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers_are_explained() {
    let Some(pg) = postgres().await else { return };
    let open = |url: String| {
        let audit = pg.audit.clone();
        async move {
            let db: Database = url.parse()?;
            SqlStore::open_database(
                &db,
                PoolSettings {
                    acquire_timeout: std::time::Duration::from_secs(2),
                    ..PoolSettings::default()
                },
                audit,
                Arc::new(FixedClock(datetime!(2026-11-26 12:00 UTC))),
            )
            .await
        }
    };
    // A wrong password: refused, and the message never shows it.
    let server = server_url().unwrap();
    let (scheme_user, rest) = server.split_once('@').expect("the test URL names its user");
    let user = scheme_user
        .trim_start_matches("postgres://")
        .trim_start_matches("postgresql://")
        .split(':')
        .next()
        .unwrap();
    let e = open(format!("postgres://{user}:s3cret-pw@{rest}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("s3cret-pw"), "{e}");
    assert!(e.contains("password authentication failed"), "{e}");
    // Nothing listens on port 1.
    let e = open("postgres://palisade@127.0.0.1:1/x".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("database"), "{e}");
    // Not a URL this store knows.
    let e = "mysql://x@127.0.0.1/db"
        .parse::<Database>()
        .unwrap_err()
        .to_string();
    assert!(e.contains("postgres://"), "{e}");
    // Passwords never reach a message.
    let db: Database = "postgres://u:hunter2@127.0.0.1:5/db".parse().unwrap();
    assert!(!db.to_string().contains("hunter2"), "{db}");
    assert!(!format!("{db:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ended_under_the_store_are_replaced_and_nothing_acknowledged_is_lost() {
    let Some(pg) = postgres().await else { return };
    let store = pg.open().await.unwrap();
    let entry = |i: usize| vec![EntryDraft::success("s", "test", format!("{i}"))];
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.extend(store.commit(vec![], entry(i)).await.unwrap().audit_indices);
    }
    // End every connection to the database, as a server restart would.
    let name = pg
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let mut admin = sqlx::AnyConnection::connect(&server_url().unwrap())
        .await
        .unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        ended.len() >= 2,
        "the writer's and a reader's connection: {ended:?}"
    );
    // Changes go on: one may be refused as unavailable while the writer
    // reconnects; an acknowledged one is never lost.
    let mut refused = Vec::new();
    for i in 5..25 {
        match store.commit(vec![], entry(i)).await {
            Ok(r) => acked.extend(r.audit_indices),
            Err(e) => refused.push(e.to_string()),
        }
    }
    assert!(
        refused.len() <= 1,
        "the store recovers by itself: {refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.contains("database is unavailable")),
        "{refused:?}"
    );
    assert!(acked.len() >= 24, "{acked:?}");
    // Reads recover too (a dead pooled connection fails one read at most).
    let mut entries = Err(StoreError::Closed);
    for _ in 0..5 {
        entries = store.audit_entries(0, 1000).await;
        if entries.is_ok() {
            break;
        }
    }
    let seqs: Vec<u64> = entries.unwrap().iter().map(|e| e.entry.index).collect();
    for i in &acked {
        assert!(
            seqs.contains(i),
            "acknowledged entry {i} is stored: {seqs:?}"
        );
    }
    drop(store);
    // The log still verifies from scratch.
    let again = pg.open().await.unwrap();
    assert_eq!(again.audit_head().unwrap().size, seqs.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_leads_a_kind_of_work_and_another_takes_over_when_it_stops() {
    use palisade_store::leader::{Leadership, TRY_EVERY};
    let Some(pg) = postgres().await else { return };
    let db: Database = pg.url.parse().unwrap();
    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (_stop_b, rx_b) = tokio::sync::watch::channel(false);
    let (_stop_c, rx_c) = tokio::sync::watch::channel(false);
    let a = Leadership::start(&db, "rollouts", rx_a);
    until("node A leads", || a.is_leader()).await;
    let b = Leadership::start(&db, "rollouts", rx_b);
    let other = Leadership::start(&db, "posture", rx_c);
    until("the other kind of work has its own leader", || {
        other.is_leader()
    })
    .await;
    tokio::time::sleep(TRY_EVERY * 3).await;
    assert!(a.is_leader() && !b.is_leader(), "exactly one leads");
    stop_a.send(true).unwrap();
    let took = until("node B takes over", || b.is_leader()).await;
    assert!(!a.is_leader());
    eprintln!("leadership moved in {took:?}");
}

/// How long until `f` holds (at most 10 s, else the test fails with `what`).
async fn until(what: &str, f: impl Fn() -> bool) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{what} within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    start.elapsed()
}
