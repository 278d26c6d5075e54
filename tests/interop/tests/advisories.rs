//! Vulnerability advisories against the fleet, with real peers: version order
//! checked against `dpkg --compare-versions` and Python's `packaging`; real
//! OSV records (GitHub Advisory Database, `fixtures/osv/`) imported with
//! `palisade advisories import` and matched against releases whose CycloneDX
//! SBOMs `cyclonedx-py` (PyPI `cyclonedx-bom`) made from pinned requirements,
//! plus Rust and Go components. The releases and devices hit, the release
//! that fixes them, the alerts, re-imports, withdrawn and malformed records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_advisory::version::Scheme;
use palisade_interop::*;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/osv")
}

fn dpkg_order(a: &str, b: &str) -> Ordering {
    let test = |op: &str| {
        Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .unwrap()
            .success()
    };
    if test("lt") {
        Ordering::Less
    } else if test("eq") {
        Ordering::Equal
    } else {
        Ordering::Greater
    }
}

/// How a Python library orders each pair: `import` names the version class
/// as `V`; -1, 0 or 1 per pair.
fn python_order(import: &str, pairs: &[(&str, &str)]) -> Vec<i32> {
    let script = format!(
        "{import}\nfor a, b in {:?}:\n    x, y = V(a), V(b)\n    print((x > y) - (x < y))",
        pairs.iter().map(|(a, b)| vec![*a, *b]).collect::<Vec<_>>()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let theirs: Vec<i32> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(theirs.len(), pairs.len());
    theirs
}

#[test]
fn debian_and_python_versions_order_as_dpkg_and_packaging_do() {
    if !have("dpkg") || !have("python3") || !have_python_module("packaging.version", "packaging") {
        return;
    }
    let debian = [
        ("1.0", "1.0-0"),
        ("1.0~rc1", "1.0"),
        ("1.0~rc1", "1.0~rc1~1"),
        ("1:0.1", "9.9"),
        ("0:1.0", "1.0"),
        ("2.7.4-1", "2.7.4-1+deb12u1"),
        ("3.0.11-1~deb12u2", "3.0.11-1~deb12u1"),
        ("1.0-1~bpo12+1", "1.0-1"),
        ("1.0a", "1.0+"),
        ("1.0.0", "1.0"),
        ("1.0.", "1.0"),
        ("10", "9"),
        ("1.0b", "1.0a"),
        ("1.001", "1.1"),
        ("1.0-a", "1.0-1"),
        ("2:1.2.3-4", "1:9.9.9-9"),
        ("1.2.3+dfsg-1", "1.2.3-1"),
        ("1.2.3.dfsg-1", "1.2.3+dfsg-1"),
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
        ("1.1.1n-0+deb11u5", "1.1.1w-0+deb11u1"),
    ];
    for (a, b) in debian {
        let ours = Scheme::Debian.compare(a, b).unwrap();
        assert_eq!(ours, dpkg_order(a, b), "{a} vs {b}");
        assert_eq!(
            Scheme::Debian.compare(b, a).unwrap(),
            ours.reverse(),
            "{b} vs {a}"
        );
    }
    let python = [
        ("1.0", "1.0.0"),
        ("1.0rc1", "1.0"),
        ("1.0.dev1", "1.0a1"),
        ("1.0a1", "1.0b1"),
        ("1.0", "1.0.post1"),
        ("1.0.post1.dev2", "1.0.post1"),
        ("1!0.1", "2.0"),
        ("1.0+local.1", "1.0"),
        ("1.0+local.1", "1.0+local.2"),
        ("2.31.0", "2.4.0"),
        ("9.0.0", "9.0.1"),
        ("1.0c1", "1.0rc1"),
        ("1.0.post1", "1.0.1"),
    ];
    let theirs = python_order("from packaging.version import Version as V", &python);
    for ((a, b), t) in python.iter().zip(theirs) {
        let ours = Scheme::Pep440.compare(a, b).unwrap() as i32;
        assert_eq!(ours, t, "{a} vs {b}");
    }
}

/// Alpine's order against an independent implementation: aboutcode's
/// `univers` (the version library of VulnerableCode), on pairs from Alpine
/// packaging practice. `apk` itself is not packaged for Debian.
#[test]
fn alpine_versions_order_as_univers_does() {
    if !have("python3") || !have_python_module("univers.versions", "univers") {
        return;
    }
    let pairs = [
        ("3.1.4-r0", "3.1.4-r1"),
        ("3.1.4-r5", "3.1.5-r0"),
        ("1.0", "1.0.1"),
        ("1.1_alpha1", "1.1"),
        ("1.1_rc2", "1.1_beta9"),
        ("1.3_alpha", "1.3_alpha2"),
        ("1.02", "1.1"),
        ("1.2.3a-r0", "1.2.3-r9"),
        ("1.2.3a-r0", "1.2.3b-r0"),
        ("1.0_p9-r0", "1.0_p10-r0"),
        ("1.0_p1-r0", "1.0-r3"),
        ("2.38-r1", "2.38.1-r0"),
        ("20230311-r0", "3.1.0-r0"),
        ("9.3_p2-r1", "9.3-r2"),
        ("1.36.1-r15", "1.36.1-r2"),
        ("0.1.0_alpha_pre2", "0.1.0_alpha"),
        ("8.5.0_pre20231120-r0", "8.5.0-r0"),
    ];
    let theirs = python_order(
        "from univers.versions import AlpineLinuxVersion as V",
        &pairs,
    );
    for ((a, b), t) in pairs.iter().zip(theirs) {
        let ours = Scheme::Alpine.compare(a, b).unwrap() as i32;
        assert_eq!(ours, t, "{a} vs {b}");
    }
}

/// A CycloneDX SBOM made by cyclonedx-py from pinned Python requirements,
/// with Rust and Go components added the way cargo-cyclonedx and
/// cyclonedx-gomod name them.
fn sbom(dir: &Path, name: &str, python: &[&str], more: &[(&str, &str, &str)]) -> PathBuf {
    let req = dir.join(format!("{name}.txt"));
    std::fs::write(&req, python.join("\n") + "\n").unwrap();
    let out = dir.join(format!("{name}.cdx.json"));
    let o = Command::new("cyclonedx-py")
        .arg("requirements")
        .arg(&req)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "cyclonedx-py: {}", text(&o));
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let list = doc["components"].as_array_mut().unwrap();
    for (n, v, purl) in more {
        list.push(serde_json::json!({
            "type": "library", "bom-ref": purl, "name": n, "version": v, "purl": purl
        }));
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    out
}

/// Uploads release `version` of model cam (security version `sv`) with this
/// SBOM, signed by `key`.
fn cam_release(server: &ServerProc, d: &Path, key: &[u8], (version, sv): (&str, u64), sbom: &Path) {
    let image = format!("cam {version}");
    upload_release_with_sbom(
        server,
        d,
        key,
        ("cam", version, sv),
        image.as_bytes(),
        &[],
        Some(sbom),
    );
}

/// Registers cam devices, each reporting the firmware given (as its
/// telemetry would record it).
fn cam_devices(server: &ServerProc, devices: &[(&str, &str)]) {
    for (id, firmware) in devices {
        server.cli_ok(&["device", "register", id, "--model", "cam"]);
        reports(server, id, firmware);
    }
}

/// Records that device `id` reports running `firmware`.
fn reports(server: &ServerProc, id: &str, firmware: &str) {
    server.sql(&format!(
        "UPDATE devices SET reported_firmware = '{firmware}' WHERE id = '{id}'"
    ));
}

fn json(server: &ServerProc, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&server.cli_ok(&all)).unwrap()
}

#[test]
fn real_advisories_hit_the_releases_whose_sboms_name_them() {
    for tool in ["python3", "cyclonedx-py", "sqlite3"] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The fixtures are from 2022-2023: alert on advisories up to a century old.
    let config = d.join("palisade.toml");
    std::fs::write(&config, "[advisories]\nalert_within_days = 36500\n").unwrap();
    let server =
        ServerProc::start_with(&d.join("data"), &["--config", config.to_str().unwrap()]).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let old = sbom(
        d,
        "old",
        &["Pillow==9.0.0", "requests==2.25.1"],
        &[
            ("regex", "1.5.4", "pkg:cargo/regex@1.5.4"),
            (
                "golang.org/x/net",
                "v0.16.0",
                "pkg:golang/golang.org/x/net@v0.16.0",
            ),
        ],
    );
    let new = sbom(
        d,
        "new",
        &["Pillow==9.0.1", "requests==2.31.0"],
        &[
            ("regex", "1.5.5", "pkg:cargo/regex@1.5.5"),
            (
                "golang.org/x/net",
                "v0.17.0",
                "pkg:golang/golang.org/x/net@v0.17.0",
            ),
        ],
    );
    cam_release(&server, d, &key, ("1.0", 1), &old);
    cam_release(&server, d, &key, ("2.0", 2), &new);
    cam_devices(
        &server,
        &[("cam-1", "1.0"), ("cam-2", "1.0"), ("cam-3", "2.0")],
    );

    // The four real records: each hits 1.0 (two devices), none 2.0.
    let report = json(
        &server,
        &["advisories", "import", fixtures().to_str().unwrap()],
    );
    assert_eq!(
        (report["new"].as_u64(), report["unchanged"].as_u64()),
        (Some(4), Some(0)),
        "{report}"
    );
    let exposed = report["exposed"].as_array().unwrap();
    assert_eq!(exposed.len(), 4, "{report}");
    assert!(
        exposed
            .iter()
            .all(|e| e["version"] == "1.0" && e["devices"] == 2),
        "{report}"
    );
    let alerts: Vec<Value> =
        serde_json::from_str(&server.cli_ok(&["alerts", "list", "--json"])).unwrap();
    let vulnerable: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["detector"] == "vulnerable_firmware")
        .collect();
    assert_eq!(vulnerable.len(), 4, "{alerts:?}");
    let pillow = vulnerable
        .iter()
        .find(|a| a["evidence"]["advisory"] == "GHSA-8vj2-vxx3-667w")
        .unwrap();
    assert_eq!(pillow["severity"], "critical", "GitHub rates it CRITICAL");
    assert_eq!(pillow["evidence"]["component"], "pkg:pypi/pillow@9.0.0");
    assert_eq!(pillow["evidence"]["devices"], 2);

    // By CVE alias: the release, the devices, the release that fixes it.
    let hit = json(&server, &["advisories", "affected", "CVE-2022-24713"]);
    let releases = hit["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{hit}");
    assert_eq!(releases[0]["version"], "1.0");
    assert_eq!(releases[0]["component"], "pkg:cargo/regex@1.5.4");
    assert_eq!(releases[0]["range"], ">= 0, < 1.5.5");
    assert_eq!(releases[0]["fixed_by"], "2.0");
    let mut devices: Vec<&str> = hit["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    devices.sort();
    assert_eq!(devices, ["cam-1", "cam-2"]);
    // requests 2.25.1 is inside [2.3.0, 2.31.0); 2.31.0 is the fix itself.
    let requests = json(&server, &["advisories", "affected", "GHSA-j8r2-6x86-q33q"]);
    assert_eq!(
        requests["releases"].as_array().unwrap().len(),
        1,
        "{requests}"
    );
    let listed = json(&server, &["advisories", "list", "--exposed"]);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");

    // Importing again changes nothing; a record withdrawn upstream stops matching.
    let again = json(
        &server,
        &["advisories", "import", fixtures().to_str().unwrap()],
    );
    assert_eq!(
        (again["new"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(4)),
        "{again}"
    );
    let mut regex: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("GHSA-m5pq-gvj9-9vr8.json")).unwrap(),
    )
    .unwrap();
    regex["modified"] = "2025-01-01T00:00:00Z".into();
    regex["withdrawn"] = "2025-01-01T00:00:00Z".into();
    let withdrawn = d.join("withdrawn.json");
    std::fs::write(&withdrawn, regex.to_string()).unwrap();
    let w = json(
        &server,
        &["advisories", "import", withdrawn.to_str().unwrap()],
    );
    assert_eq!(
        (w["updated"].as_u64(), w["withdrawn"].as_u64()),
        (Some(1), Some(1)),
        "{w}"
    );
    let gone = json(&server, &["advisories", "affected", "CVE-2022-24713"]);
    assert!(gone["releases"].as_array().unwrap().is_empty(), "{gone}");

    // Malformed records are refused (exit status 2), and nothing stored changes.
    let bad = d.join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("empty-id.json"), r#"{"id":"","modified":"x"}"#).unwrap();
    std::fs::write(bad.join("not-json.json"), "{").unwrap();
    std::fs::write(
        bad.join("two-kinds.json"),
        r#"{"id":"X-1","modified":"x","affected":[{"package":{"ecosystem":"npm","name":"a"},
           "ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}"#,
    )
    .unwrap();
    let o = server.cli(&["advisories", "import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("3 refused"), "{}", text(&o));
    let still = json(&server, &["advisories", "list"]);
    assert_eq!(still.as_array().unwrap().len(), 4, "{still}");

    // A release accepted after the import is matched at once.
    cam_release(&server, d, &key, ("3.0", 2), &old);
    let pillow = json(&server, &["advisories", "affected", "CVE-2022-22817"]);
    let versions: Vec<&str> = pillow["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"3.0") && versions.contains(&"1.0"),
        "{pillow}"
    );
    let o = server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `palisade release vex` for cam 1.0 with the envelope `f`.
fn upload_vex(server: &ServerProc, f: &Path) -> std::process::Output {
    let file = f.to_str().unwrap();
    server.cli(&[
        "release",
        "vex",
        "--model",
        "cam",
        "--release-version",
        "1.0",
        "--file",
        file,
    ])
}

/// Signs a VEX document as the supplier's tooling would: a DSSE envelope.
fn vex_envelope(d: &Path, name: &str, payload_type: &str, doc: &Value, key: &[u8]) -> PathBuf {
    let env =
        palisade_release::sign_envelope(payload_type, doc.to_string().as_bytes(), key).unwrap();
    let f = d.join(name);
    std::fs::write(&f, serde_json::to_vec(&env).unwrap()).unwrap();
    f
}

#[test]
fn supplier_vex_suppresses_matches_and_says_why() {
    for tool in ["python3", "cyclonedx-py", "sqlite3"] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let elsewhere = d.join("globex");
    std::fs::create_dir(&elsewhere).unwrap();
    let other = supplier_with_model(&server, &elsewhere, "globex", "lamp");
    let old = sbom(
        d,
        "old",
        &["Pillow==9.0.0", "requests==2.25.1"],
        &[("regex", "1.5.4", "pkg:cargo/regex@1.5.4")],
    );
    cam_release(&server, d, &key, ("1.0", 1), &old);
    cam_devices(&server, &[("cam-1", "1.0"), ("cam-2", "1.0")]);
    server.cli_ok(&["advisories", "import", fixtures().to_str().unwrap()]);
    let exposed = |server: &ServerProc| {
        json(server, &["advisories", "list", "--exposed"])
            .as_array()
            .unwrap()
            .len()
    };
    let before = exposed(&server);
    assert!(before >= 3, "{before}");

    // CycloneDX VEX: regex is in the firmware but the vulnerable code is
    // never reached. The document is valid CycloneDX 1.5 by
    // cyclonedx-python-lib's own schema check.
    let cdx = serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "vulnerabilities": [{
            "id": "CVE-2022-24713",
            "source": {"name": "NVD", "url": "https://nvd.nist.gov/vuln/detail/CVE-2022-24713"},
            "analysis": {"state": "not_affected", "justification": "code_not_reachable",
                         "detail": "the firmware never compiles untrusted regular expressions"},
            "affects": [{"ref": "urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/1#pkg:cargo/regex@1.5.4"}]
        }]
    });
    let check = "from cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nimport sys\ne = JsonStrictValidator(SchemaVersion.V1_5).validate_str(sys.stdin.read())\nprint(e or 'valid')";
    let o = run_with_stdin(
        Command::new("python3").args(["-c", check]),
        cdx.to_string().as_bytes(),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "valid",
        "{}",
        text(&o)
    );
    let f = vex_envelope(
        d,
        "cam-1.0.vex.json",
        "application/vnd.cyclonedx+json",
        &cdx,
        &key,
    );
    let out = json(
        &server,
        &[
            "release",
            "vex",
            "--model",
            "cam",
            "--release-version",
            "1.0",
            "--file",
            f.to_str().unwrap(),
        ],
    );
    assert_eq!(
        (out["statements"].as_u64(), out["not_affected"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    let hit = json(&server, &["advisories", "affected", "CVE-2022-24713"]);
    let r = &hit["releases"][0];
    assert_eq!(
        r["not_affected"]["justification"], "code_not_reachable",
        "{hit}"
    );
    assert_eq!(r["not_affected"]["supplier"], "acme", "{hit}");
    assert_eq!(r["devices"], 0, "{hit}");
    assert!(hit["devices"].as_array().unwrap().is_empty(), "{hit}");
    assert_eq!(exposed(&server), before - 1);

    // A CSAF 2.0 VEX for the whole firmware replaces it: requests is declared
    // not affected (a flag), regex is exposed again.
    let csaf = serde_json::json!({
        "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "cam 1.0 VEX",
            "publisher": {"category": "vendor", "name": "Acme", "namespace": "https://acme.example"},
            "tracking": {"id": "ACME-VEX-2026-1", "status": "final", "version": "1",
                "initial_release_date": "2026-12-01T00:00:00Z", "current_release_date": "2026-12-01T00:00:00Z",
                "revision_history": [{"date": "2026-12-01T00:00:00Z", "number": "1", "summary": "first"}]}},
        "product_tree": {"branches": [{"category": "vendor", "name": "Acme", "branches": [
            {"category": "product_version", "name": "1.0",
             "product": {"product_id": "CAM-1.0", "name": "cam firmware 1.0"}}]}]},
        "vulnerabilities": [{"cve": "CVE-2023-32681",
            "product_status": {"known_not_affected": ["CAM-1.0"]},
            "flags": [{"label": "vulnerable_code_not_in_execute_path", "product_ids": ["CAM-1.0"]}],
            "threats": [{"category": "impact", "details": "no proxy is ever configured", "product_ids": ["CAM-1.0"]}]}]
    });
    let f = vex_envelope(d, "cam-1.0.csaf.json", "application/csaf+json", &csaf, &key);
    let o = upload_vex(&server, &f);
    assert!(o.status.success(), "{}", text(&o));
    let requests = json(&server, &["advisories", "affected", "CVE-2023-32681"]);
    assert_eq!(
        requests["releases"][0]["not_affected"]["justification"],
        "vulnerable_code_not_in_execute_path",
        "{requests}"
    );
    assert_eq!(
        requests["releases"][0]["not_affected"]["detail"],
        "no proxy is ever configured"
    );
    let regex = json(&server, &["advisories", "affected", "CVE-2022-24713"]);
    assert!(regex["releases"][0]["not_affected"].is_null(), "{regex}");
    assert_eq!(regex["devices"].as_array().unwrap().len(), 2, "{regex}");

    // Another supplier cannot speak for acme's firmware; a not_affected
    // without a reason is refused; neither changes what is stored.
    let f = vex_envelope(
        d,
        "forged.json",
        "application/vnd.cyclonedx+json",
        &cdx,
        &other,
    );
    let o = upload_vex(&server, &f);
    assert!(
        !o.status.success() && text(&o).contains("signed by supplier globex"),
        "{}",
        text(&o)
    );
    let mut bare = cdx.clone();
    bare["vulnerabilities"][0]["analysis"] = serde_json::json!({"state": "not_affected"});
    let f = vex_envelope(
        d,
        "bare.json",
        "application/vnd.cyclonedx+json",
        &bare,
        &key,
    );
    let o = upload_vex(&server, &f);
    assert!(
        !o.status.success() && text(&o).contains("without a justification"),
        "{}",
        text(&o)
    );
    let still = json(&server, &["advisories", "affected", "CVE-2023-32681"]);
    assert!(!still["releases"][0]["not_affected"].is_null(), "{still}");
    let audit: Vec<Value> =
        serde_json::from_str(&server.api_get("/api/v1/audit/entries?limit=1000")).unwrap();
    assert!(
        audit.iter().any(|e| e["action"] == "release.vex"
            && e["outcome"] == "denied"
            && e.to_string().contains("globex")),
        "no denied release.vex entry"
    );
}

/// The CRA side: a report per advisory (exposure over time, the first fix,
/// the share of the fleet updated; CSV read back by Python's csv module) and,
/// once the vulnerability is known to be exploited, the Article 14 pack with
/// its deadlines.
#[test]
fn cra_reports_follow_the_fleet_and_article_14_deadlines() {
    for tool in ["python3", "cyclonedx-py", "sqlite3"] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let old = sbom(
        d,
        "old",
        &["Pillow==9.0.1"],
        &[("regex", "1.5.4", "pkg:cargo/regex@1.5.4")],
    );
    let new = sbom(
        d,
        "new",
        &["Pillow==9.0.1"],
        &[("regex", "1.5.5", "pkg:cargo/regex@1.5.5")],
    );
    cam_release(&server, d, &key, ("1.0", 1), &old);
    cam_release(&server, d, &key, ("2.0", 2), &new);
    cam_devices(
        &server,
        &[("cam-1", "1.0"), ("cam-2", "1.0"), ("cam-3", "1.0")],
    );
    server.cli_ok(&["advisories", "import", fixtures().to_str().unwrap()]);

    let r = json(&server, &["advisories", "report", "CVE-2022-24713"]);
    assert_eq!(r["advisory"], "GHSA-m5pq-gvj9-9vr8", "{r}");
    assert_eq!(r["exposed_devices"], 3, "{r}");
    assert_eq!(r["first_fix"]["version"], "2.0", "{r}");
    assert_eq!(
        r["days_to_fix"], 0,
        "the fix was accepted before the advisory was seen: {r}"
    );
    assert_eq!(r["fleet_updated_share"], 0.0, "{r}");
    assert_eq!(r["exposure"][0]["devices"], 3, "{r}");

    // Two devices update: today's figure follows.
    for id in ["cam-1", "cam-2"] {
        reports(&server, id, "2.0");
    }
    let r = json(&server, &["advisories", "report", "CVE-2022-24713"]);
    assert_eq!(r["exposed_devices"], 1, "{r}");
    let share = r["fleet_updated_share"].as_f64().unwrap();
    assert!((share - 2.0 / 3.0).abs() < 1e-9, "{r}");
    let series = r["exposure"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{r}");
    assert_eq!(series[0]["devices"], 1, "{r}");

    // The CSV, as a spreadsheet would read it.
    let csv = server.cli_ok(&["advisories", "report", "CVE-2022-24713", "--csv"]);
    let o = run_with_stdin(
        Command::new("python3").args([
            "-c",
            "import csv, sys, json\nrows = list(csv.DictReader(sys.stdin))\nprint(json.dumps(rows))",
        ]),
        csv.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{csv}");
    assert_eq!(rows[0]["advisory"], "GHSA-m5pq-gvj9-9vr8");
    assert_eq!(rows[0]["first_fix_release"], "cam 2.0");
    assert_eq!(rows[0]["exposed_devices"], "1");
    assert!(
        rows[0]["aliases"]
            .as_str()
            .unwrap()
            .contains("CVE-2022-24713"),
        "{csv}"
    );

    // Article 14: nothing to report until exploitation is known.
    let o = server.cli(&["advisories", "cra-pack", "CVE-2022-24713"]);
    assert!(
        !o.status.success() && text(&o).contains("not marked as actively exploited"),
        "{}",
        text(&o)
    );
    let now = palisade_core::Clock::now(&palisade_core::SystemClock);
    let aware = (now - time::Duration::hours(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    server.cli_ok(&[
        "advisories",
        "exploited",
        "CVE-2022-24713",
        "--aware-at",
        &aware,
        "--note",
        "listed in CISA KEV",
    ]);
    let pack = json(&server, &["advisories", "cra-pack", "CVE-2022-24713"]);
    let n = pack["notifications"].as_array().unwrap();
    assert_eq!(
        (n[0]["stage"].as_str(), n[0]["status"].as_str()),
        (Some("early warning"), Some("overdue")),
        "{pack}"
    );
    assert_eq!(n[1]["status"], "due", "{pack}");
    assert_eq!(
        n[2]["status"], "due",
        "the fix exists, so the final report's clock runs: {pack}"
    );
    assert_eq!(
        pack["next_due"]["stage"], "vulnerability notification",
        "{pack}"
    );
    let p = &pack["products"][0];
    assert_eq!(
        (p["model"].as_str(), p["devices"].as_u64()),
        (Some("cam"), Some(1)),
        "{pack}"
    );
    assert_eq!(p["affected_versions"][0], "1.0");
    assert_eq!(p["fixed_in"], "2.0");
    let text_pack = server.cli_ok(&["advisories", "cra-pack", "CVE-2022-24713"]);
    assert!(
        text_pack.contains("Article 14") && text_pack.contains("listed in CISA KEV"),
        "{text_pack}"
    );
    let audit: Vec<Value> =
        serde_json::from_str(&server.api_get("/api/v1/audit/entries?limit=1000")).unwrap();
    assert!(audit.iter().any(|e| e["action"] == "advisory.exploited"));
}

/// A `GIT` range decides the commits it names: a component whose SBOM entry
/// says it was built from the commit that introduced the flaw is hit; one
/// built from the fixing commit is not.
#[test]
fn git_ranges_hit_components_built_from_the_commit_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let bad = "9d2b4a1c0f3e5d6a7b8c9d0e1f2a3b4c5d6e7f80";
    let good = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
    let sbom = |name: &str, commit: &str| {
        let f = d.join(format!("{name}.cdx.json"));
        std::fs::write(
            &f,
            serde_json::json!({
                "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                "components": [{
                    "type": "library", "name": "github.com/acme/libfoo",
                    "version": "v0.0.0-20260101000000-9d2b4a1c0f3e",
                    "purl": "pkg:golang/github.com/acme/libfoo@v0.0.0-20260101000000-9d2b4a1c0f3e",
                    "pedigree": {"commits": [{"uid": commit, "url": format!("https://git.example/acme/libfoo/commit/{commit}")}]}
                }]
            })
            .to_string(),
        )
        .unwrap();
        f
    };
    let (old, new) = (sbom("old", bad), sbom("new", good));
    cam_release(&server, d, &key, ("1.0", 1), &old);
    cam_release(&server, d, &key, ("1.1", 1), &new);
    let record = d.join("GO-2026-0001.json");
    std::fs::write(
        &record,
        serde_json::json!({
            "id": "GO-2026-0001", "modified": "2026-12-01T00:00:00Z", "summary": "libfoo parses headers unsafely",
            "affected": [{"package": {"ecosystem": "Go", "name": "github.com/acme/libfoo"},
                "ranges": [{"type": "GIT", "repo": "https://git.example/acme/libfoo",
                    "events": [{"introduced": bad}, {"fixed": good}]}]}]
        })
        .to_string(),
    )
    .unwrap();
    server.cli_ok(&["advisories", "import", record.to_str().unwrap()]);
    let hit = json(&server, &["advisories", "affected", "GO-2026-0001"]);
    let releases = hit["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{hit}");
    assert_eq!(releases[0]["version"], "1.0", "{hit}");
    assert!(
        releases[0]["range"]
            .as_str()
            .unwrap()
            .contains("introduced"),
        "{hit}"
    );
    assert_eq!(releases[0]["fixed_component"], good, "{hit}");
    assert_eq!(releases[0]["fixed_by"], "1.1", "{hit}");
}
