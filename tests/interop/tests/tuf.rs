//! The TUF image repository: an offline key ceremony with `palisade keys`
//! (threshold root and targets keys), the server's online snapshot and
//! timestamp keys, and an independent TUF client — python-tuf's `ngclient`
//! (`peers/tuf_client.py`) — refreshing the metadata over HTTPS and downloading
//! and verifying a released image. Publishing below the threshold, an image that
//! is not an accepted release, a replayed targets version and an image swapped
//! in the blob store are all refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use palisade_interop::tuf::{Ceremony, publish_targets, tuf_client, tuf_client_at};
use palisade_interop::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_independent_tuf_client_verifies_a_release_signed_in_a_key_ceremony() {
    if !(have("python3") && have_python_module("tuf.ngclient", "tuf")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");

    // The ceremony, offline.
    let c = Ceremony::new(&server, d);
    let root = c.root.clone();
    let o = c.sign_root("root-1", &d.join("weak-root.json"));
    assert!(
        !o.status.success() && text(&o).contains("root signatures needed"),
        "{}",
        text(&o)
    );
    let o = c.sign_root("root-1,root-2", &root);
    assert!(o.status.success(), "{}", text(&o));
    server.cli_ok(&["tuf", "set-root", s(&root)]);

    // A release goes through the gate, then into signed targets.
    let image = upload_release(&server, d, &key, "cam", "1.0", 1);
    let draft = d.join("draft.json");
    std::fs::write(&draft, server.cli_ok(&["tuf", "targets-draft"])).unwrap();
    let sign = |keys: &str, draft: &Path, out: &Path| c.sign_targets(keys, draft, out);
    // One compromised targets key is below the threshold: its signature alone
    // (the other one stripped) is refused.
    let full = d.join("targets-full.json");
    sign("targets-1,targets-2", &draft, &full);
    let mut one: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&full).unwrap()).unwrap();
    one["signatures"].as_array_mut().unwrap().truncate(1);
    let below = d.join("targets-below.json");
    std::fs::write(&below, one.to_string()).unwrap();
    let o = server.cli(&["tuf", "publish", s(&below)]);
    assert!(
        !o.status.success() && text(&o).contains("threshold"),
        "{}",
        text(&o)
    );
    // A target that is not an accepted release.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&draft).unwrap()).unwrap();
    forged["targets"]["cam/9.9.img"] = forged["targets"]["cam/1.0.img"].clone();
    let forged_draft = d.join("forged-draft.json");
    std::fs::write(&forged_draft, forged.to_string()).unwrap();
    let forged_signed = d.join("forged.json");
    sign("targets-1,targets-2", &forged_draft, &forged_signed);
    let o = server.cli(&["tuf", "publish", s(&forged_signed)]);
    assert!(
        !o.status.success() && text(&o).contains("not an accepted release"),
        "{}",
        text(&o)
    );
    // The genuine, threshold-signed targets.
    let signed = d.join("targets.json");
    sign("targets-1,targets-2", &draft, &signed);
    server.cli_ok(&["tuf", "publish", s(&signed)]);
    // Replaying the same version is refused.
    let o = server.cli(&["tuf", "publish", s(&signed)]);
    assert!(
        !o.status.success() && text(&o).contains("not newer"),
        "{}",
        text(&o)
    );

    // python-tuf refreshes root → timestamp → snapshot → targets and verifies
    // the download against the signed hash and length.
    let o = tuf_client(&server, d, &root, "cam/1.0.img");
    assert!(o.status.success(), "ngclient: {}", text(&o));
    let got = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(std::fs::read(got).unwrap(), std::fs::read(&image).unwrap());
    assert!(text(&o).contains("security_version"), "{}", text(&o));

    // An image swapped in the blob store is caught by the client.
    let sha = palisade_pki::sha256_hex(&std::fs::read(&image).unwrap());
    let blob = server
        .data
        .join("blobs/sha256")
        .join(&sha[..2])
        .join(&sha[2..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    std::fs::remove_dir_all(d.join("downloads")).unwrap();
    let o = tuf_client(&server, d, &root, "cam/1.0.img");
    assert!(
        !o.status.success(),
        "a swapped image was accepted: {}",
        text(&o)
    );
    assert!(
        text(&o).to_lowercase().contains("hash") || text(&o).contains("Length"),
        "{}",
        text(&o)
    );
}

/// The director signs per-device assignments online; the device fetches its own
/// over mutual TLS (curl with its certificate) and checks it with the director
/// key: signature, device, expiry and a counter that only grows.
#[test]
fn a_device_fetches_and_verifies_its_director_assignment() {
    if !(have("openssl") && have("curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let image = upload_release(&server, d, &key, "cam", "2.0", 3);
    let (dev_key, dev_cert) = enrol_with_token(&server, d, "cam-1", "cam");

    let director: serde_json::Value =
        serde_json::from_str(&server.api_get("/api/v1/director/key")).unwrap();
    let public =
        palisade_attest::unb64("key", director["ed25519_public"].as_str().unwrap(), 64).unwrap();
    server.cli_ok(&["device", "assign", "cam-1", "--release-version", "2.0"]);
    let fetch = || {
        let o = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--cacert",
                s(&server.data.join("ca/root.pem")),
            ])
            .args(["--cert", s(&dev_cert), "--key", s(&dev_key)])
            .arg(format!("{}/director/v1/assignment", server.url))
            .output()
            .unwrap();
        assert!(o.status.success(), "curl: {}", text(&o));
        serde_json::from_slice::<palisade_release::director::SignedAssignment>(&o.stdout).unwrap()
    };
    let now = palisade_core::Clock::now_ms(&palisade_core::SystemClock);
    let first = fetch();
    let a =
        palisade_release::director::verify_assignment(&first, &public, "cam-1", now, 0).unwrap();
    assert_eq!(a.target, "cam/2.0.img");
    assert_eq!(
        a.sha256,
        palisade_pki::sha256_hex(&std::fs::read(&image).unwrap())
    );
    assert_eq!((a.counter, a.security_version), (1, 3));
    // Another device cannot use it, and once a newer one exists the old one is a replay.
    assert!(
        palisade_release::director::verify_assignment(&first, &public, "cam-2", now, 0).is_err()
    );
    server.cli_ok(&["device", "assign", "cam-1", "--release-version", "2.0"]);
    let second = fetch();
    let b =
        palisade_release::director::verify_assignment(&second, &public, "cam-1", now, a.counter)
            .unwrap();
    assert_eq!(b.counter, 2);
    assert!(matches!(
        palisade_release::director::verify_assignment(&first, &public, "cam-1", now, b.counter),
        Err(palisade_release::director::DirectorError::Replayed { .. })
    ));
    // Without a client certificate there is no assignment to fetch.
    let o = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--cacert",
            s(&server.data.join("ca/root.pem")),
        ])
        .arg(format!("{}/director/v1/assignment", server.url))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
}

/// A server whose TUF root (2 of root-1..3) is installed and whose targets
/// list release cam 1.0; its ceremony and the supplier's key.
fn repository_with_release(d: &Path) -> (ServerProc, Ceremony, Vec<u8>) {
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let c = Ceremony::new(&server, d);
    let o = c.sign_root("root-1,root-2", &c.root);
    assert!(o.status.success(), "{}", text(&o));
    server.cli_ok(&["tuf", "set-root", s(&c.root)]);
    upload_release(&server, d, &key, "cam", "1.0", 1);
    let o = publish_targets(&server, d, &c.keys, &c.root, "targets-1,targets-2");
    assert!(o.status.success(), "{}", text(&o));
    (server, c, key)
}

/// Root rotation in the offline ceremony: root 2 names new root keys and is
/// signed by both the old root's threshold and the new one's; the server
/// takes it only so, and python-tuf, trusting root 1, walks to root 2 and
/// verifies a release signed after the rotation.
#[test]
fn the_root_keys_rotate_and_a_client_trusting_the_old_root_follows() {
    if !(have("python3") && have_python_module("tuf.ngclient", "tuf")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, c, key) = repository_with_release(d);

    // New root keys: root-1 and root-2 retire, root-3 stays, root-4 and
    // root-5 join; the threshold stays 2.
    palisade_interop::palisade_ok(&["keys", "generate", "--dir", s(&c.keys), "root-4", "root-5"]);
    let next = "root-3,root-4,root-5";
    // Signed by the new keys only: the current root's threshold is not met.
    let only_new = d.join("root-2-new-only.json");
    let o = c.sign_root_as(next, 2, None, "root-4,root-5", &only_new);
    assert!(o.status.success(), "{}", text(&o));
    let o = server.cli(&["tuf", "set-root", s(&only_new)]);
    assert!(
        !o.status.success() && text(&o).contains("not signed by the current root"),
        "{}",
        text(&o)
    );
    // Signed by the old threshold only: the new root's own is not met.
    let only_old = d.join("root-2-old-only.json");
    let o = c.sign_root_as(next, 2, Some(&c.root), "root-1,root-2", &only_old);
    assert!(
        !o.status.success()
            || !server
                .cli(&["tuf", "set-root", s(&only_old)])
                .status
                .success(),
        "a root without its own threshold was accepted"
    );
    // Both: accepted.
    let root2 = d.join("root-2.json");
    let o = c.sign_root_as(
        next,
        2,
        Some(&c.root),
        "root-1,root-2,root-4,root-5",
        &root2,
    );
    assert!(o.status.success(), "{}", text(&o));
    server.cli_ok(&["tuf", "set-root", s(&root2)]);
    let served = server.api_get_bytes("/tuf/metadata/2.root.json");
    let v: serde_json::Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(v["signed"]["version"], 2, "{v}");

    // A release after the rotation, targets signed under root 2.
    upload_release(&server, d, &key, "cam", "2.0", 2);
    let o = publish_targets(&server, d, &c.keys, &root2, "targets-1,targets-2");
    assert!(o.status.success(), "{}", text(&o));
    // python-tuf trusts root 1 and must walk to root 2 to verify it.
    let o = tuf_client(&server, d, &c.root, "cam/2.0.img");
    assert!(o.status.success(), "ngclient: {}", text(&o));
    // A root 3 signed by the retired keys alone is refused (the ceremony
    // will not even make it: they are not root 2's keys).
    let root3 = d.join("root-3.json");
    let o = c.sign_root_as(next, 3, Some(&root2), "root-1,root-2", &root3);
    assert!(
        !o.status.success() || !server.cli(&["tuf", "set-root", s(&root3)]).status.success(),
        "retired root keys signed a new root"
    );
}

/// Fast-forward recovery: the online timestamp key leaks and signs a
/// timestamp with an absurd version, which a client accepts (it is validly
/// signed); afterwards the genuine timestamps are "older" and the client
/// refuses every refresh. Rotating the online keys through a new root
/// (`tuf online-keys --next`, a ceremony, `tuf set-root`) recovers it:
/// python-tuf drops its trusted timestamp and snapshot when their keys
/// rotate, and the server signs both again with the new keys at once.
#[test]
fn rotating_the_online_keys_recovers_clients_from_a_fast_forward_attack() {
    use tough::schema::{Hashes, Metafile, Signed, Timestamp};
    if !(have("python3") && have_python_module("tuf.ngclient", "tuf")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (server, c, _key) = repository_with_release(d);
    let device = d.join("device-metadata");
    let fetch = || tuf_client_at(&server, d, &c.root, "cam/1.0.img", Some(&device));
    let o = fetch();
    assert!(o.status.success(), "ngclient: {}", text(&o));

    // The leaked timestamp key signs version 1 000 000 over the real snapshot.
    let genuine = server.document("tuf/timestamp.json");
    let snapshot = server.document("tuf/snapshot.json");
    let root: Signed<tough::schema::Root> =
        serde_json::from_slice(&server.document("tuf/root.json")).unwrap();
    let snap_version =
        serde_json::from_slice::<serde_json::Value>(&snapshot).unwrap()["signed"]["version"]
            .as_u64()
            .unwrap();
    let mut ts = Timestamp::new(
        "1.0.0".into(),
        std::num::NonZeroU64::new(1_000_000).unwrap(),
        palisade_server::tuf::expiry(
            palisade_core::Clock::now_ms(&palisade_core::SystemClock) + 86_400_000,
        )
        .unwrap(),
    );
    ts.meta.insert(
        "snapshot.json".into(),
        Metafile {
            length: Some(snapshot.len() as u64),
            hashes: Some(Hashes {
                sha256: ring::digest::digest(&ring::digest::SHA256, &snapshot)
                    .as_ref()
                    .to_vec()
                    .into(),
                _extra: Default::default(),
            }),
            version: std::num::NonZeroU64::new(snap_version).unwrap(),
            _extra: Default::default(),
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let forged = rt
        .block_on(palisade_server::tuf::sign_role(
            ts,
            &root.signed,
            &[server.data.join("tuf/online/timestamp.pk8")],
        ))
        .unwrap();
    server.plant_document("tuf/timestamp.json", &forged);
    let o = fetch();
    assert!(
        o.status.success(),
        "the forged timestamp verifies, so the client takes it: {}",
        text(&o)
    );
    // The genuine timestamp is back: to the client it is a rollback.
    server.plant_document("tuf/timestamp.json", &genuine);
    let o = fetch();
    assert!(
        !o.status.success() && text(&o).contains("BadVersionNumber"),
        "the client should be stuck after the fast-forward: {}",
        text(&o)
    );

    // Recovery: new online keys, named by root 2 (signed by both thresholds).
    let next = server.cli_ok(&["tuf", "online-keys", "--next"]);
    let next_ts = serde_json::from_str::<serde_json::Value>(&next).unwrap()["timestamp"]["keyid"]
        .as_str()
        .unwrap()
        .to_owned();
    c.use_online_keys(&next);
    let root2 = d.join("root-2.json");
    let o = c.sign_root_as(
        "root-1,root-2,root-3",
        2,
        Some(&c.root),
        "root-1,root-2",
        &root2,
    );
    assert!(o.status.success(), "{}", text(&o));
    server.cli_ok(&["tuf", "set-root", s(&root2)]);
    let ts_now: serde_json::Value =
        serde_json::from_slice(&server.api_get_bytes("/tuf/metadata/timestamp.json")).unwrap();
    assert_eq!(
        ts_now["signatures"][0]["keyid"],
        next_ts.as_str(),
        "{ts_now}"
    );
    let o = fetch();
    assert!(
        o.status.success(),
        "the client did not recover: {}",
        text(&o)
    );
    assert!(
        server
            .data
            .join("tuf/online/retired")
            .read_dir()
            .unwrap()
            .count()
            >= 2
    );
}
