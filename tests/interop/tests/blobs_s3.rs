//! Blobs on an S3-compatible store shared by two nodes on one PostgreSQL
//! database: moto's S3 server (PyPI `moto[server]`), started here on
//! loopback and stopped by PID. A firmware image larger than one multipart
//! part, uploaded through node A, is served by node B, whole and by byte
//! range, from the bucket (nothing is stored under either node's data
//! directory); the TUF repository is one for both (in the database): a key
//! ceremony published through A is verified by python-tuf through B. When the
//! store goes away the nodes report not ready and refuse
//! uploads with a clear error; when it is back they are ready again by
//! themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::tuf::tuf_client;
use palisade_interop::*;

const BUCKET: &str = "palisade-blobs";

/// moto's S3 server on a loopback port, with the bucket made.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(port: u16, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]')");
        let me = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .arg(format!("http://127.0.0.1:{port}/{BUCKET}"))
                .output()
                .unwrap();
            if o.stdout == b"200" {
                return me;
            }
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn object_status(&self, key: &str) -> String {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
            .arg(format!("http://127.0.0.1:{}/{BUCKET}/{key}", self.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(server: &ServerProc, path: &str, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-s", "--max-time", "30", "--cacert"])
        .arg(server.data.join("ca/root.pem"))
        .args(extra)
        .arg(format!("{}{path}", server.url))
        .output()
        .unwrap()
}

fn readyz(server: &ServerProc) -> String {
    String::from_utf8_lossy(&curl(server, "/readyz", &[]).stdout).into_owned()
}

#[test]
fn two_nodes_share_firmware_through_an_s3_bucket() {
    let Some(admin) = postgres_admin() else {
        return;
    };
    for tool in ["psql", "python3", "curl", "openssl"] {
        if !have(tool) {
            return;
        }
    }
    if !have_python_module("moto.server", "moto[server]")
        || !have_python_module("tuf.ngclient", "tuf")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let moto_port = free_port();
    let moto = Moto::start(moto_port, &dir.path().join("moto.log"));
    let url =
        create_postgres_database(&admin, &format!("palisade_s3_{}", std::process::id())).unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[blobs.s3]\nendpoint = \"http://127.0.0.1:{moto_port}\"\nbucket = \"{BUCKET}\"\naccess_key_id = \"palisade-test\"\n\n[blobs]\ntimeout_secs = 5\n"
        ),
    )
    .unwrap();
    let secret = Path::new("not-a-real-secret");
    let (a, b) = two_nodes_env(
        dir.path(),
        &url,
        &["--config", config.to_str().unwrap()],
        &[("PALISADE_S3_SECRET_ACCESS_KEY", secret)],
    )
    .unwrap();
    assert_eq!(readyz(&a), "ready\n");

    // 9 MiB: a multipart upload of two parts.
    let key = supplier_with_model(&a, dir.path(), "acme", "cam");
    let mut image = vec![0u8; 9 * 1024 * 1024 + 17];
    let mut rng = Rng(7);
    for b in image.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    upload_release_bytes(&a, dir.path(), &key, ("cam", "1.0.0", 1), &image, &[]);
    let sha = palisade_pki::sha256_hex(&image);
    assert_eq!(moto.object_status(&format!("sha256/{sha}")), "200");
    for node in ["a", "b"] {
        let local = dir.path().join(node).join("blobs/sha256");
        let files = std::fs::read_dir(&local).map(|d| d.count()).unwrap_or(0);
        assert_eq!(files, 0, "blobs stored locally under {}", local.display());
    }

    // Node B serves it, whole and by range.
    let got = dir.path().join("got.img");
    let o = curl(
        &b,
        "/tuf/targets/cam/1.0.0.img",
        &["--fail", "-o", got.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(palisade_pki::sha256_hex(&std::fs::read(&got).unwrap()), sha);
    let o = curl(
        &b,
        "/tuf/targets/cam/1.0.0.img",
        &["--fail", "-H", "Range: bytes=8388600-8388615"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, image[8_388_600..=8_388_615]);

    // One TUF repository for the cluster: signed and published through node
    // A, refreshed and verified by python-tuf through node B.
    let (keys, root) = tuf_ceremony(&a, dir.path());
    let o = publish_targets(&a, dir.path(), &keys, &root, "targets-1,targets-2");
    assert!(o.status.success(), "{}", text(&o));
    for name in [
        "root.json",
        "targets.json",
        "snapshot.json",
        "timestamp.json",
    ] {
        let path = format!("/tuf/metadata/{name}");
        let (from_a, from_b) = (curl(&a, &path, &["--fail"]), curl(&b, &path, &["--fail"]));
        assert!(from_b.status.success(), "{name}: {}", text(&from_b));
        assert_eq!(
            from_a.stdout, from_b.stdout,
            "{name} differs between the nodes"
        );
    }
    let o = tuf_client(&b, dir.path(), &root, "cam/1.0.0.img");
    assert!(o.status.success(), "ngclient through node B: {}", text(&o));
    let got = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(palisade_pki::sha256_hex(&std::fs::read(got).unwrap()), sha);

    // The store goes away: not ready, uploads refused with a clear error,
    // nothing crashes.
    drop(moto);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut said = readyz(&b);
    while !said.contains("blob store") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        said = readyz(&b);
    }
    assert!(
        said.starts_with("not ready: the blob store is unavailable"),
        "{said}"
    );
    let o = curl(
        &a,
        "/api/v1/blobs",
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {}", a.admin_token()),
            "--data-binary",
            "new firmware",
            "-w",
            "\n%{http_code}",
        ],
    );
    let answer = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(answer.ends_with("\n503"), "{answer}");
    assert!(answer.contains("blob store is unavailable"), "{answer}");

    // Back (an empty store on the same port): ready again by itself.
    let _moto = Moto::start(moto_port, &dir.path().join("moto2.log"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while readyz(&a) != "ready\n" {
        assert!(Instant::now() < deadline, "not ready again: {}", readyz(&a));
        std::thread::sleep(Duration::from_millis(250));
    }
    let o = a.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}
