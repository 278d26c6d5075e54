//! The supply-chain gate for firmware releases against a real `palisade serve`,
//! with an independent supplier build system (`peers/provenance.py`:
//! securesystemslib's DSSE signer and `cryptography` keys) signing SLSA v1
//! provenance. A release that passes is recorded; every defect is refused with
//! its reason, audited, and nothing is recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use palisade_interop::*;

fn peers() -> bool {
    have("python3")
        && have_python_module("securesystemslib.dsse", "securesystemslib")
        && have_python_module("cryptography", "cryptography")
}

fn py(dir: &Path, args: &[&str]) {
    let script = palisade_interop::peer_script("provenance.py");
    let o = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "provenance.py {args:?}: {}", text(&o));
}

struct Env {
    dir: tempfile::TempDir,
    server: ServerProc,
    supplier_token: String,
}

fn sbom(dir: &Path) -> PathBuf {
    let p = dir.join("sbom.json");
    std::fs::write(
        &p,
        serde_json::json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
            "version": 1,
            "components": [
                {"type": "library", "name": "busybox", "version": "1.36.1",
                 "purl": "pkg:generic/busybox@1.36.1"},
                {"type": "operating-system", "name": "linux", "version": "6.1.0"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    p
}

fn setup() -> Option<Env> {
    if !peers() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    // Images above 64 KiB are refused in these tests.
    let cfg = dir.path().join("palisade.toml");
    std::fs::write(&cfg, "[ota]\nmax_image_bytes = 65536\n").unwrap();
    let server = ServerProc::start_with(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    let f = dir.path().join("factory");
    palisade_ok(&[
        "factory",
        "init-ca",
        "--supplier",
        "acme",
        "--dir",
        f.to_str().unwrap(),
    ]);
    palisade_ok(&[
        "factory",
        "init-ca",
        "--supplier",
        "other",
        "--dir",
        dir.path().join("factory-other").to_str().unwrap(),
    ]);
    server.cli_ok(&[
        "supplier",
        "add",
        "acme",
        "--ca-cert",
        f.join("ca.pem").to_str().unwrap(),
    ]);
    server.cli_ok(&[
        "supplier",
        "add",
        "other",
        "--ca-cert",
        dir.path().join("factory-other/ca.pem").to_str().unwrap(),
    ]);
    py(
        dir.path(),
        &[
            "keygen",
            "--type",
            "ecdsa",
            "--private",
            "acme.pem",
            "--public",
            "acme.pub",
        ],
    );
    py(
        dir.path(),
        &[
            "keygen",
            "--type",
            "ed25519",
            "--private",
            "acme2.pem",
            "--public",
            "acme2.pub",
        ],
    );
    py(
        dir.path(),
        &[
            "keygen",
            "--type",
            "ecdsa",
            "--private",
            "rogue.pem",
            "--public",
            "rogue.pub",
        ],
    );
    for k in ["acme.pub", "acme2.pub"] {
        server.cli_ok(&[
            "supplier",
            "key",
            "add",
            "acme",
            "--public-key",
            dir.path().join(k).to_str().unwrap(),
        ]);
    }
    server.cli_ok(&["model", "add", "cam", "--supplier", "acme"]);
    server.cli_ok(&["model", "add", "lock", "--supplier", "other"]);
    let supplier_token = server
        .cli_ok(&[
            "token",
            "create",
            "--operator",
            "acme",
            "--role",
            "supplier",
        ])
        .trim()
        .to_owned();
    Some(Env {
        dir,
        server,
        supplier_token,
    })
}

impl Env {
    fn image(&self, name: &str, bytes: usize) -> PathBuf {
        let p = self.dir.path().join(name);
        let body: Vec<u8> = (0..bytes).map(|i| (i * 7 + name.len()) as u8).collect();
        std::fs::write(&p, body).unwrap();
        p
    }

    fn sign(&self, key: &str, image: &Path, out: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec![
            "sign",
            "--private",
            key,
            "--image",
            image.to_str().unwrap(),
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        py(self.dir.path(), &args);
        self.dir.path().join(out)
    }

    /// `palisade release upload` as the supplier.
    fn upload(
        &self,
        model: &str,
        version: &str,
        sv: u64,
        image: &Path,
        sbom: &Path,
        prov: &Path,
    ) -> Output {
        let mut args = vec!["--token".to_owned(), self.supplier_token.clone()];
        args.extend(release_upload_args(model, version, sv, image, sbom, prov));
        self.server
            .cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn refused(&self, o: &Output, needle: &str) {
        let t = text(o);
        assert!(
            !o.status.success(),
            "accepted, but should be refused ({needle}): {t}"
        );
        assert!(t.contains(needle), "{t} (wanted {needle:?})");
        let audit = self.server.api_get("/api/v1/audit/entries?limit=10000");
        let entries: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
        assert!(
            entries.iter().any(|e| e["action"] == "release.upload"
                && e["outcome"] != "success"
                && e.to_string().contains(&needle.replace('"', "\\\""))),
            "no audited refusal containing {needle:?}"
        );
    }

    fn releases(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.server.cli_ok(&["--json", "release", "list"])).unwrap()
    }
}

#[test]
fn a_release_signed_by_its_supplier_passes_the_gate() {
    let Some(env) = setup() else { return };
    let img = env.image("fw-1.0.bin", 20_000);
    let sbom = sbom(env.dir.path());
    for (key, version) in [("acme.pem", "1.0.0"), ("acme2.pem", "1.0.1")] {
        let prov = env.sign(key, &img, &format!("{version}.dsse.json"), &[]);
        let o = env.upload("cam", version, 1, &img, &sbom, &prov);
        assert!(o.status.success(), "{}", text(&o));
    }
    let list = env.releases();
    assert_eq!(list.len(), 2, "{list:?}");
    let sha = palisade_pki::sha256_hex(&std::fs::read(&img).unwrap());
    assert_eq!(list[0]["image_sha256"], sha.as_str());
    assert_eq!(
        list[0]["builder_id"],
        "https://ci.example.com/builders/fw@v1"
    );
    assert_eq!(list[0]["uploaded_by"], "operator:acme");
    // The stored blob is the image, byte for byte.
    let blob = env
        .server
        .data
        .join("blobs/sha256")
        .join(&sha[..2])
        .join(&sha[2..]);
    assert_eq!(std::fs::read(blob).unwrap(), std::fs::read(&img).unwrap());
    // A supplier's token reaches nothing but releases.
    let o = env
        .server
        .cli(&["--token", &env.supplier_token, "device", "list"]);
    assert!(!o.status.success(), "{}", text(&o));
}

#[test]
fn every_supply_chain_defect_is_refused_audited_and_not_recorded() {
    let Some(env) = setup() else { return };
    let img = env.image("fw-2.0.bin", 30_000);
    let other_img = env.image("fw-evil.bin", 30_000);
    let sbom = sbom(env.dir.path());
    let good = env.sign("acme.pem", &img, "good.json", &[]);

    // Signed with a key the supplier never registered.
    let rogue = env.sign("rogue.pem", &img, "rogue.json", &[]);
    env.refused(
        &env.upload("cam", "2.0.0", 2, &img, &sbom, &rogue),
        "not signed by a key registered",
    );
    // Unsigned.
    let mut unsigned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    unsigned["signatures"] = serde_json::json!([]);
    let unsigned_path = env.dir.path().join("unsigned.json");
    std::fs::write(&unsigned_path, unsigned.to_string()).unwrap();
    env.refused(
        &env.upload("cam", "2.0.0", 2, &img, &sbom, &unsigned_path),
        "no signatures",
    );
    // A genuine provenance for another image.
    env.refused(
        &env.upload("cam", "2.0.0", 2, &other_img, &sbom, &good),
        "subject digest does not match",
    );
    // Malformed SBOM and a non-DSSE provenance.
    let bad_sbom = env.dir.path().join("bad-sbom.json");
    std::fs::write(
        &bad_sbom,
        r#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":7}]}"#,
    )
    .unwrap();
    env.refused(
        &env.upload("cam", "2.0.0", 2, &img, &bad_sbom, &good),
        "SBOM",
    );
    let not_dsse = env.dir.path().join("not-dsse.json");
    std::fs::write(&not_dsse, r#"{"hello":"world"}"#).unwrap();
    env.refused(
        &env.upload("cam", "2.0.0", 2, &img, &sbom, &not_dsse),
        "not a DSSE envelope",
    );
    // A model the supplier does not own.
    env.refused(
        &env.upload("lock", "2.0.0", 2, &img, &sbom, &good),
        "may not release firmware for model lock",
    );
    // Over the size limit: refused while streaming (413), nothing stored.
    let big = env.image("fw-big.bin", 100_000);
    let big_prov = env.sign("acme.pem", &big, "big.json", &[]);
    let o = env.upload("cam", "2.0.0", 2, &big, &sbom, &big_prov);
    assert!(
        !o.status.success() && text(&o).contains("larger than ota.max_image_bytes"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_dir(env.server.data.join("blobs/tmp"))
            .unwrap()
            .count(),
        0,
        "a refused upload left a partial file"
    );
    assert!(env.releases().is_empty());

    // The genuine release passes; one with a lower security version then fails.
    let o = env.upload("cam", "2.0.0", 2, &img, &sbom, &good);
    assert!(o.status.success(), "{}", text(&o));
    let old = env.sign("acme.pem", &other_img, "old.json", &[]);
    env.refused(
        &env.upload("cam", "1.9.0", 1, &other_img, &sbom, &old),
        "anti-rollback floor",
    );
    assert_eq!(env.releases().len(), 1);
}
