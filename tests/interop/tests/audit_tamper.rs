//! `palisade audit verify` against a log edited behind the server's back with the
//! sqlite3 shell: each kind of tampering is found and the first bad entry named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_interop::*;

/// A live server with a dozen audit entries.
fn populated() -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.cli_ok(&["model", "add", "meter"]);
    for i in 0..6 {
        server.cli_ok(&[
            "device",
            "register",
            &format!("meter-{i}"),
            "--model",
            "meter",
        ]);
    }
    (dir, server)
}

fn sqlite(server: &ServerProc, sql: &str) {
    let db = server.data.join("palisade.db");
    let o = run("sqlite3", &[db.to_str().unwrap(), sql]);
    assert!(o.status.success(), "sqlite3: {}", text(&o));
}

/// Runs verify through the API and offline; both must fail naming `index` and `kind`.
fn assert_verify_names(server: &ServerProc, index: u64, kind: &str) {
    for args in [
        vec!["audit", "verify"],
        vec![
            "audit",
            "verify",
            "--db",
            server.data.join("palisade.db").to_str().unwrap(),
        ],
    ] {
        let o = server.cli(&args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} passed a tampered log: {t}");
        assert!(
            t.contains(&format!("first bad entry is #{index} ({kind})")),
            "{args:?}: expected #{index} ({kind}), got: {t}"
        );
    }
}

fn peers() -> bool {
    have("sqlite3")
}

#[test]
fn verify_passes_on_a_live_log() {
    if !peers() {
        return;
    }
    let (_d, server) = populated();
    let t = text(&server.cli(&["audit", "verify"]));
    assert!(t.contains("audit log verified"), "{t}");
    let db = server.data.join("palisade.db");
    let o = server.cli(&["audit", "verify", "--db", db.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = server.cli(&["audit", "proof", "3"]);
    assert!(
        o.status.success() && text(&o).contains("is included"),
        "{}",
        text(&o)
    );
}

#[test]
fn verify_names_an_edited_entry() {
    if !peers() {
        return;
    }
    let (_d, mut server) = populated();
    sqlite(
        &server,
        "UPDATE audit_entries SET subject = 'meter-99' WHERE seq = 7",
    );
    assert_verify_names(&server, 7, "edited");
    // A restart refuses to sign more entries onto a damaged log.
    server.stop();
    let err = ServerProc::start(&server.data).unwrap_err();
    assert!(format!("{err:#}").contains("audit verify --db"), "{err:#}");
}

#[test]
fn verify_names_a_deleted_entry() {
    if !peers() {
        return;
    }
    let (_d, server) = populated();
    sqlite(&server, "DELETE FROM audit_entries WHERE seq = 8");
    assert_verify_names(&server, 8, "deleted");
}

#[test]
fn verify_names_reordered_entries() {
    if !peers() {
        return;
    }
    let (_d, server) = populated();
    sqlite(
        &server,
        "UPDATE audit_entries SET seq = -1 WHERE seq = 6;
         UPDATE audit_entries SET seq = 6 WHERE seq = 9;
         UPDATE audit_entries SET seq = 9 WHERE seq = -1;",
    );
    assert_verify_names(&server, 6, "reordered");
}

#[test]
fn verify_names_an_inserted_entry() {
    if !peers() {
        return;
    }
    let (_d, server) = populated();
    sqlite(
        &server,
        "UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 5;
         UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000;
         INSERT INTO audit_entries (seq, time_ms, actor, action, subject, outcome, detail, digest)
           SELECT 5, time_ms, 'operator:mallory', 'token.create', 'backdoor', 'success', '{}', digest
           FROM audit_entries WHERE seq = 4;",
    );
    assert_verify_names(&server, 5, "inserted");
}
