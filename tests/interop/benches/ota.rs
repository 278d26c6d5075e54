//! Benchmark (informational): firmware updates.
//!
//! 1. Delta size and generation time: Palisade's deltas (zstd with the old
//!    image as reference, level 19) against `bsdiff`, `xdelta3 -9` and
//!    `zstd -19 --patch-from` (Debian) on the same image pairs, built from
//!    this machine's shared libraries: a *patch* (a few regions changed, 64 KiB
//!    inserted, so everything after it moves) and a *rebuild* (every fifth
//!    component replaced).
//! 2. Device-side verify-and-write: the real agent installing an image over
//!    mutual TLS into a slot file (download, SHA-256, write, fsync every MiB)
//!    against `sha256sum` reading the same file.
//! 3. Rollout notifications: a one-wave rollout to N connected simulated
//!    devices — director assignments signed, stored, audited and announced
//!    over MQTT — per second of wall time and per server CPU-second.
//!
//! ```text
//! cargo build --release -p palisade -p palisade-agent
//! cargo bench -p palisade-interop --bench ota            # full
//! cargo bench -p palisade-interop --bench ota -- --quick # smoke
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Shared libraries of this machine, in a stable order: real machine code.
fn components() -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".so") && p.is_file() && !p.is_symlink())
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|b| b.len() > 4096 && b.len() < 4 << 20)
        .collect()
}

fn pairs(size: usize) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let comps = components();
    assert!(
        comps.len() > 20,
        "too few shared libraries to build images from"
    );
    let mut take = vec![];
    let mut used = 0;
    let mut i = 0;
    while used < size && i < comps.len() {
        used += comps[i].len();
        take.push(i);
        i += 1;
    }
    let spare: Vec<usize> = (i..comps.len()).collect();
    let old: Vec<u8> = take.iter().flat_map(|&k| comps[k].clone()).collect();
    // A patch: small edits and an insertion that moves everything after it.
    let mut patch = old.clone();
    for n in 0..16 {
        let at = (n * 7919 * 131) % (patch.len() - 1024);
        for b in &mut patch[at..at + 512] {
            *b = b.wrapping_add(1);
        }
    }
    let third = patch.len() / 3;
    patch.splice(
        third..third,
        comps[take[1]][..65_536.min(comps[take[1]].len())].to_vec(),
    );
    // A rebuild: every fifth component replaced by another library.
    let mut spare_it = spare.iter().cycle();
    let rebuild: Vec<u8> = take
        .iter()
        .enumerate()
        .flat_map(|(n, &k)| {
            if n % 5 == 4 {
                spare_it
                    .next()
                    .map_or_else(|| comps[k].clone(), |&j| comps[j].clone())
            } else {
                comps[k].clone()
            }
        })
        .collect();
    vec![("patch", old.clone(), patch), ("rebuild", old, rebuild)]
}

fn timed(c: &mut Command) -> f64 {
    let t = Instant::now();
    let o = c.stdout(Stdio::null()).output().unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&o.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn deltas(dir: &Path, size: usize) {
    println!(
        "\n## delta size and generation time ({} MiB images)",
        size >> 20
    );
    println!(
        "{:<9} {:<26} {:>12} {:>9} {:>10} {:>14}",
        "pair", "tool", "delta bytes", "% image", "seconds", "size vs ours"
    );
    for (name, old, new) in pairs(size) {
        let (o, n) = (dir.join("old.img"), dir.join("new.img"));
        std::fs::write(&o, &old).unwrap();
        std::fs::write(&n, &new).unwrap();
        let t = Instant::now();
        let ours = palisade_release::delta::make(&old, &new, 19).unwrap();
        let ours_s = t.elapsed().as_secs_f64();
        let mut rebuilt = Vec::with_capacity(new.len());
        palisade_release::delta::apply(&old, &ours[..], new.len() as u64, |c| {
            rebuilt.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(rebuilt == new, "our delta did not rebuild the image");
        let mut rows = vec![("palisade (zstd ref, -19)".to_string(), ours.len(), ours_s)];
        let wl = (64 - ((old.len() + new.len()) as u64).leading_zeros()).clamp(10, 31);
        let out = dir.join("d.zst");
        let secs = timed(
            Command::new("zstd")
                .args(["-q", "-f", "-19", &format!("--long={wl}")])
                .arg(format!("--patch-from={}", s(&o)))
                .args([s(&n), "-o", s(&out)]),
        );
        rows.push(("zstd -19 --patch-from".into(), file_len(&out), secs));
        let out = dir.join("d.bsdiff");
        let secs = timed(Command::new("bsdiff").args([s(&o), s(&n), s(&out)]));
        rows.push(("bsdiff".into(), file_len(&out), secs));
        let out = dir.join("d.xd3");
        let secs =
            timed(Command::new("xdelta3").args(["-e", "-9", "-f", "-s", s(&o), s(&n), s(&out)]));
        rows.push(("xdelta3 -9".into(), file_len(&out), secs));
        for (tool, bytes, secs) in rows {
            println!(
                "{:<9} {:<26} {:>12} {:>8.2}% {:>10.2} {:>13.2}x",
                name,
                tool,
                bytes,
                bytes as f64 * 100.0 / new.len() as f64,
                secs,
                bytes as f64 / ours.len() as f64
            );
        }
    }
}

fn file_len(p: &Path) -> usize {
    std::fs::metadata(p).unwrap().len() as usize
}

/// A server with supplier `acme`, model `cam`, a TUF ceremony, and a release
/// `1.0` whose image is `bytes`.
fn server_with_release(dir: &Path, bytes: &[u8]) -> (ServerProc, Vec<u8>) {
    let server = ServerProc::start(&dir.join("data")).unwrap();
    let key = supplier_with_model(&server, dir, "acme", "cam");
    let (keys, root) = tuf_ceremony(&server, dir);
    upload_release_bytes(&server, dir, &key, ("cam", "1.0", 1), bytes, &[]);
    let o = publish_targets(&server, dir, &keys, &root, "targets-1,targets-2");
    assert!(o.status.success(), "{}", text(&o));
    (server, key)
}

fn verify_and_write(dir: &Path, size: usize) {
    println!(
        "\n## device-side verify-and-write ({} MiB image)",
        size >> 20
    );
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let image: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    let (server, _) = server_with_release(dir, &image);
    let dev = dir.join("device");
    std::fs::create_dir_all(&dev).unwrap();
    for e in ["env0", "env1"] {
        std::fs::write(dev.join(e), vec![0u8; 0x4000]).unwrap();
    }
    std::fs::write(
        dev.join("fw_env.config"),
        format!(
            "{} 0x0 0x4000\n{} 0x0 0x4000\n",
            dev.join("env0").display(),
            dev.join("env1").display()
        ),
    )
    .unwrap();
    let agent = || {
        let mut c = Command::new(agent_bin());
        c.env("PALISADE_AGENT_SERVER", &server.url)
            .env("PALISADE_AGENT_ROOT", server.data.join("ca/root.pem"))
            .env("PALISADE_AGENT_STATE_DIR", dev.join("state"))
            .env("PALISADE_AGENT_FW_ENV_CONFIG", dev.join("fw_env.config"))
            .env("PALISADE_AGENT_SLOT_A", dev.join("slot-a.img"))
            .env("PALISADE_AGENT_SLOT_B", dev.join("slot-b.img"))
            .env("PALISADE_AGENT_NO_DELTAS", "true")
            .env("RUST_LOG", "warn");
        c
    };
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "cam"]);
    let o = agent()
        .args(["enroll", "--token", token.trim(), "--device-id", "cam-1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(dev.join("factory.img"), b"factory").unwrap();
    let o = agent()
        .args([
            "slot-init",
            "--image",
            s(&dev.join("factory.img")),
            "--firmware-version",
            "0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    server.cli_ok(&["device", "assign", "cam-1", "--release-version", "1.0"]);
    let t = Instant::now();
    let o = agent().args(["update", "--once"]).output().unwrap();
    let ours = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let img = dir.join("cam-1.0.img");
    // Warm the page cache for sha256sum as the server's read was warm.
    let _ = std::fs::read(&img).unwrap();
    let t = Instant::now();
    let o = Command::new("sha256sum").arg(&img).output().unwrap();
    let peer = t.elapsed().as_secs_f64();
    assert!(o.status.success());
    let mb = size as f64 / 1e6;
    println!("{:<58} {:>10} {:>9}", "what", "MB/s", "seconds");
    println!(
        "{:<58} {:>10.1} {:>9.2}",
        "palisade-agent update (mTLS download, SHA-256, write, fsync)",
        mb / ours,
        ours
    );
    println!(
        "{:<58} {:>10.1} {:>9.2}",
        "sha256sum (read and hash only, page cache warm)",
        mb / peer,
        peer
    );
    println!("ratio agent/sha256sum: {:.2}", peer / ours);
}

fn notifications(dir: &Path, devices: usize) {
    println!("\n## rollout notifications ({devices} connected simulated devices)");
    let (server, _) = server_with_release(dir, b"cam firmware 1.0");
    let mut sim = Command::new(palisade_sim_bin())
        .args(["--devices", &devices.to_string(), "--model", "cam"])
        .args([
            "--duration",
            "900",
            "--telemetry-every",
            "300",
            "--concurrency",
            "32",
        ])
        .args(["--state-dir", s(&dir.join("sim"))])
        .env("PALISADE_DATA_DIR", &server.data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = server.connected_devices();
        if n >= devices {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} devices connected");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = server.child.id();
    let (w0, c0) = (Instant::now(), cpu_seconds(pid));
    server.cli_ok(&[
        "rollout",
        "create",
        "bench",
        "--model",
        "cam",
        "--release-version",
        "1.0",
        "--waves",
        "100%",
    ]);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&server.api_get("/api/v1/rollouts/bench")).unwrap();
        let assigned = v["waves"][0]["assigned"].as_u64().unwrap_or(0)
            + v["waves"][0]["committed"].as_u64().unwrap_or(0)
            + v["waves"][0]["failed"].as_u64().unwrap_or(0);
        if assigned as usize >= devices {
            break;
        }
        assert!(
            w0.elapsed() < Duration::from_secs(600),
            "rollout stalled at {assigned}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (wall, cpu) = (w0.elapsed().as_secs_f64(), cpu_seconds(pid) - c0);
    let _ = sim.kill();
    let _ = sim.wait();
    println!(
        "{devices} assignments signed, stored, audited and announced in {wall:.2} s: \
         {:.0}/s wall, {:.0} per server CPU-second (incl. the API polling)",
        devices as f64 / wall,
        devices as f64 / cpu.max(1e-3)
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    for tool in ["bsdiff", "xdelta3", "zstd", "sha256sum"] {
        if !have(tool) {
            println!("SKIP: {tool} is not installed");
            return;
        }
    }
    println!("# ota ({})", if quick { "quick" } else { "full" });
    let dir = tempfile::tempdir().unwrap();
    deltas(dir.path(), if quick { 2 << 20 } else { 16 << 20 });
    let d2 = tempfile::tempdir().unwrap();
    verify_and_write(d2.path(), if quick { 16 << 20 } else { 192 << 20 });
    let d3 = tempfile::tempdir().unwrap();
    notifications(d3.path(), if quick { 50 } else { 500 });
}
