//! Benchmark: vulnerability advisories at fleet scale. A generated OSV zip
//! of 20 000 PyPI records (the order of PyPI's whole OSV set; the real one
//! cannot be had offline here) over 5 000 packages is imported with
//! `palisade advisories import` into a server holding 100 accepted releases
//! whose CycloneDX SBOMs list 2 000 components each, and 100 000 devices
//! running them; then `palisade advisories affected` answers for an advisory
//! that hits every release (all 100 000 devices). Figures: records per wall
//! second and per CPU-second of the server, and the time to answer.
//!
//! ```text
//! cargo build --release -p palisade
//! cargo bench -p palisade-interop --bench advisories            # full
//! cargo bench -p palisade-interop --bench advisories -- --quick # smoke
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use palisade_interop::*;
use serde_json::json;

const PACKAGES: usize = 5_000;

fn package(i: usize) -> String {
    format!("pkg-{}", i % PACKAGES)
}

/// Release `r`'s SBOM: `n` PyPI components at version 1.(r % 10).0, pkg-0
/// (in every release) first.
fn write_sbom(path: &Path, r: usize, n: usize) {
    let components: Vec<_> = (0..n)
        .map(|j| {
            let name = if j == 0 {
                package(0)
            } else {
                package(1 + (r * 37 + j) % (PACKAGES - 1))
            };
            let v = format!("1.{}.0", r % 10);
            json!({"type": "library", "bom-ref": format!("{name}@{v}"), "name": name,
                   "version": v, "purl": format!("pkg:pypi/{name}@{v}")})
        })
        .collect();
    let doc = json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                     "components": components});
    std::fs::write(path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

/// The OSV zip: record 0 names pkg-0 (in every release) from "0" with no
/// fix; the others a package each, fixed at 1.(k % 10 + 1).0, with a
/// versions list and an alias, like real PyPI records.
fn write_zip(path: &Path, records: usize) -> u64 {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut bytes = 0;
    for k in 0..records {
        let events = if k == 0 {
            json!([{"introduced": "0"}])
        } else {
            json!([{"introduced": "0"}, {"fixed": format!("1.{}.0", k % 10 + 1)}])
        };
        let versions: Vec<String> = (0..=(k % 10)).map(|m| format!("1.{m}.0")).collect();
        let r = json!({
            "schema_version": "1.6.0",
            "id": format!("PYSEC-BENCH-{k}"),
            "modified": "2025-01-01T00:00:00Z",
            "published": "2024-06-01T00:00:00Z",
            "aliases": [format!("CVE-2099-{k}")],
            "summary": format!("generated advisory {k} for {}", package(if k == 0 { 0 } else { k })),
            "details": "Generated for the benchmark; shaped like a PyPI advisory database record.",
            "affected": [{"package": {"ecosystem": "PyPI", "name": package(if k == 0 { 0 } else { k }),
                                      "purl": format!("pkg:pypi/{}", package(k))},
                          "ranges": [{"type": "ECOSYSTEM", "events": events}],
                          "versions": versions}],
            "references": [{"type": "WEB", "url": format!("https://example.invalid/advisory/{k}")}],
            "database_specific": {"severity": "HIGH"}
        });
        let b = serde_json::to_vec(&r).unwrap();
        bytes += b.len() as u64;
        z.start_file(format!("PYSEC-BENCH-{k}.json"), opts).unwrap();
        z.write_all(&b).unwrap();
    }
    z.finish().unwrap();
    bytes
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (records, releases, components, devices) = if quick {
        (2_000, 10, 500, 10_000)
    } else {
        (20_000, 100, 2_000, 100_000)
    };
    println!(
        "advisories: {records} OSV records against {releases} releases × {components} SBOM components, {devices} devices"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let t = Instant::now();
    for r in 1..=releases {
        let sbom = d.join(format!("sbom-{r}.json"));
        write_sbom(&sbom, r, components);
        upload_release_with_sbom(
            &server,
            d,
            &key,
            ("cam", &format!("{r}.0"), 1),
            format!("cam firmware {r}").as_bytes(),
            &[],
            Some(&sbom),
        );
    }
    println!(
        "  setup: {releases} releases accepted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The devices, straight into the database (registering 100 000 through
    // the API is not what is measured here).
    server.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})
         INSERT INTO devices (id, model_id, state, created_ms, updated_ms, reported_firmware)
         SELECT printf('dev-%06d', i), 'cam', 'active', 0, 0, ((i % {releases}) + 1) || '.0' FROM n",
        devices - 1
    ));
    let zip = d.join("all.zip");
    let raw = write_zip(&zip, records);
    println!(
        "  OSV zip: {records} records, {:.1} MB of JSON, {:.1} MB zipped",
        raw as f64 / 1e6,
        std::fs::metadata(&zip).unwrap().len() as f64 / 1e6
    );

    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid);
    let t = Instant::now();
    let out = server.cli_ok(&["advisories", "import", zip.to_str().unwrap(), "--json"]);
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["new"].as_u64(),
        Some(records as u64),
        "{}",
        &out[..out.len().min(400)]
    );
    let exposed = report["exposed"].as_array().map_or(0, Vec::len);
    println!(
        "  import: {records} records in {wall:.1} s = {:.0} records/s wall, {:.0} records per server CPU-second ({cpu:.1} CPU-s); {exposed} (advisory, release) exposures, {} alerted (published in the last 30 days)",
        records as f64 / wall,
        records as f64 / cpu.max(1e-9),
        report["alerted"]
    );

    let cpu0 = cpu_seconds(pid);
    let t = Instant::now();
    let out = server.cli_ok(&["advisories", "affected", "CVE-2099-0", "--json"]);
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let hit: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = hit["devices"].as_array().map_or(0, Vec::len);
    assert_eq!(n, devices, "every device runs a release with pkg-0");
    assert_eq!(hit["releases"].as_array().map_or(0, Vec::len), releases);
    println!(
        "  affected CVE-2099-0: {n} devices on {releases} releases in {:.0} ms (CLI, {:.1} MB of JSON); server {:.0} ms CPU",
        wall * 1e3,
        out.len() as f64 / 1e6,
        cpu * 1e3
    );
    let t = Instant::now();
    let _ = server.cli_ok(&["advisories", "import", zip.to_str().unwrap(), "--json"]);
    println!(
        "  re-import (all unchanged): {:.0} records/s wall",
        records as f64 / t.elapsed().as_secs_f64()
    );
}
