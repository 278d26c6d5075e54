//! The agent's installer end to end, against the real server and the real
//! `palisade-agent` binary: TUF metadata from a key ceremony, director
//! assignments, A/B slots as files, the U-Boot environment read by
//! `fw_printenv`, the boot shim's bootcount logic. Each attack of the OTA
//! threat model has a test named after it; the power-cut test kills the agent
//! with SIGKILL at random points and boots the device after every kill.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use palisade_interop::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A server with a supplier, a model `cam`, a TUF root from a ceremony (root
/// 2-of-3, targets 2-of-2), and one device with A/B slots.
struct Rig {
    _dir: tempfile::TempDir,
    d: PathBuf,
    server: ServerProc,
    supplier_key: Vec<u8>,
    keys: PathBuf,
    root: PathBuf,
    dev: PathBuf,
    hardware: String,
}

impl Rig {
    fn new() -> Option<Self> {
        if !(have("openssl") && have("fw_printenv")) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let server = ServerProc::start(&d.join("data")).unwrap();
        let supplier_key = supplier_with_model(&server, &d, "acme", "cam");
        let (keys, root) = tuf_ceremony(&server, &d);
        let dev = d.join("device");
        std::fs::create_dir_all(&dev).unwrap();
        Some(Self {
            _dir: dir,
            d,
            server,
            supplier_key,
            keys,
            root,
            dev,
            hardware: "rev-b".into(),
        })
    }

    /// Uploads a release whose image is `bytes`.
    fn release(&self, version: &str, secver: u64, bytes: &[u8], hardware: &[&str]) -> PathBuf {
        upload_release_bytes(
            &self.server,
            &self.d,
            &self.supplier_key,
            ("cam", version, secver),
            bytes,
            hardware,
        )
    }

    /// Signs (with `keys`) and publishes the targets role listing every release.
    fn publish_with(&self, keys: &str) -> Output {
        publish_targets(&self.server, &self.d, &self.keys, &self.root, keys)
    }

    fn publish(&self) {
        let o = self.publish_with("targets-1,targets-2");
        assert!(o.status.success(), "publish: {}", text(&o));
    }

    fn env_config(&self) -> PathBuf {
        self.dev.join("fw_env.config")
    }

    fn agent(&self) -> Command {
        let mut c = Command::new(agent_bin());
        c.env("PALISADE_AGENT_SERVER", &self.server.url)
            .env("PALISADE_AGENT_ROOT", self.server.data.join("ca/root.pem"))
            .env("PALISADE_AGENT_STATE_DIR", self.dev.join("state"))
            .env("PALISADE_AGENT_FW_ENV_CONFIG", self.env_config())
            .env("PALISADE_AGENT_SLOT_A", self.dev.join("slot-a.img"))
            .env("PALISADE_AGENT_SLOT_B", self.dev.join("slot-b.img"))
            .env("PALISADE_AGENT_HARDWARE", &self.hardware)
            .env("PALISADE_AGENT_NO_DELTAS", "true");
        c
    }

    /// Enrols the device `cam-1` with a token and writes its factory image.
    fn device(&self) {
        // Two erased environment partitions, as on a factory-fresh device.
        for e in ["env0", "env1"] {
            std::fs::write(self.dev.join(e), vec![0u8; 0x4000]).unwrap();
        }
        std::fs::write(
            self.env_config(),
            format!(
                "{} 0x0 0x4000\n{} 0x0 0x4000\n",
                self.dev.join("env0").display(),
                self.dev.join("env1").display()
            ),
        )
        .unwrap();
        let token = self
            .server
            .cli_ok(&["enrollment-token", "create", "--model", "cam"]);
        let o = self
            .agent()
            .args(["enroll", "--token", token.trim(), "--device-id", "cam-1"])
            .output()
            .unwrap();
        assert!(o.status.success(), "enrol: {}", text(&o));
        let factory = self.dev.join("factory.img");
        std::fs::write(&factory, b"cam factory image 0.9").unwrap();
        let o = self
            .agent()
            .args([
                "slot-init",
                "--image",
                s(&factory),
                "--firmware-version",
                "0.9",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "slot-init: {}", text(&o));
    }

    fn assign(&self, version: &str) {
        self.server
            .cli_ok(&["device", "assign", "cam-1", "--release-version", version]);
    }

    fn update(&self) -> Output {
        self.agent().args(["update", "--once"]).output().unwrap()
    }

    fn boot(&self) -> Output {
        self.agent_boot_cmd().output().unwrap()
    }

    fn agent_boot_cmd(&self) -> Command {
        let mut c = self.agent();
        c.arg("boot");
        c
    }

    fn printenv(&self) -> String {
        let o = Command::new("fw_printenv")
            .arg("-c")
            .arg(self.env_config())
            .output()
            .unwrap();
        assert!(o.status.success(), "fw_printenv: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn env_has(&self, line: &str) -> bool {
        self.printenv().lines().any(|l| l == line)
    }

    /// The server's record of the device's last update report.
    fn reported(&self) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.server.api_get("/api/v1/updates?device=cam-1")).unwrap();
        v[0].clone()
    }

    /// Installs `version` completely: update, reboot, health check, commit.
    fn install(&self, version: &str) {
        self.assign(version);
        let o = self.update();
        assert_eq!(o.status.code(), Some(10), "update: {}", text(&o));
        let o = self.boot();
        assert!(o.status.success(), "boot: {}", text(&o));
        let o = self.update();
        assert!(
            o.status.success() && text(&o).contains(&format!("committed {version}")),
            "commit: {}",
            text(&o)
        );
    }

    /// Runs one update expecting a refusal mentioning `why`; nothing changes
    /// on the device and the server hears the reason.
    fn refused(&self, why: &str) {
        let before = self.printenv();
        let o = self.update();
        assert_eq!(
            o.status.code(),
            Some(12),
            "expected a refusal: {}",
            text(&o)
        );
        assert!(
            text(&o).to_lowercase().contains(&why.to_lowercase()),
            "refusal should mention {why:?}: {}",
            text(&o)
        );
        let after = self.printenv();
        let active = before
            .lines()
            .find_map(|l| l.strip_prefix("boot_slot="))
            .unwrap_or("a")
            .to_owned();
        let active_sha = format!("slot_{active}_sha256");
        for var in ["boot_slot", "upgrade_available", active_sha.as_str()] {
            let get = |e: &str| {
                e.lines()
                    .find(|l| l.starts_with(&format!("{var}=")))
                    .map(str::to_owned)
            };
            assert_eq!(get(&before), get(&after), "{var} changed on a refusal");
        }
        assert!(!after.contains("upgrade_available=1"), "{after}");
        let r = self.reported();
        assert_eq!(r["state"], "refused", "{r}");
        let o = self.boot();
        assert!(o.status.success(), "boot after a refusal: {}", text(&o));
    }
}

#[test]
fn the_agent_installs_with_a_trial_boot_commits_and_raises_its_floor() {
    let Some(rig) = Rig::new() else { return };
    rig.release("1.0", 1, b"cam firmware 1.0", &[]);
    rig.release("2.0", 2, &vec![7u8; 3 << 20], &["rev-b"]);
    rig.publish();
    rig.device();
    assert!(rig.env_has("boot_slot=a"), "{}", rig.printenv());

    rig.assign("2.0");
    let o = rig.update();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    // fw_printenv reads the trial the agent armed.
    for line in [
        "boot_slot=b",
        "alt_slot=a",
        "upgrade_available=1",
        "bootcount=0",
        "bootlimit=3",
        "slot_b_version=2.0",
    ] {
        assert!(rig.env_has(line), "{line}: {}", rig.printenv());
    }
    assert_eq!(rig.reported()["state"], "installed");
    let o = rig.boot();
    assert!(
        text(&o).contains("booted slot b version 2.0"),
        "{}",
        text(&o)
    );
    assert!(rig.env_has("bootcount=1"), "{}", rig.printenv());
    let o = rig.update();
    assert!(text(&o).contains("committed 2.0"), "{}", text(&o));
    assert!(rig.env_has("upgrade_available=0"), "{}", rig.printenv());
    assert_eq!(rig.reported()["state"], "committed");
    let floor = std::fs::read_to_string(rig.dev.join("state/ota/floor")).unwrap();
    assert_eq!(floor.trim(), "2");
    // Nothing more to do until the next assignment.
    let o = rig.update();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // fw_setenv changes the environment under the agent: an operator forces a
    // boot limit of 1 on the next trial; the agent keeps the other variables.
    let o = Command::new("fw_setenv")
        .arg("-c")
        .arg(rig.env_config())
        .args(["site_note", "lab-7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // A health check that fails rolls back to the previous slot at once.
    rig.release("2.1", 2, b"cam firmware 2.1 (broken)", &[]);
    rig.publish();
    rig.assign("2.1");
    assert_eq!(rig.update().status.code(), Some(10));
    assert!(rig.boot().status.success());
    let o = rig
        .agent()
        .args(["update", "--once", "--health-command", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert!(text(&o).contains("health check"), "{}", text(&o));
    let o = rig.boot();
    assert!(
        text(&o).contains("booted slot b version 2.0"),
        "{}",
        text(&o)
    );
    assert_eq!(rig.reported()["state"], "rolled-back");
    assert!(rig.env_has("site_note=lab-7"), "{}", rig.printenv());

    // An image that never boots: U-Boot's boot limit brings the old slot back,
    // and the agent reports the fallback.
    rig.release("2.2", 2, b"cam firmware 2.2", &[]);
    rig.publish();
    rig.assign("2.2");
    assert_eq!(rig.update().status.code(), Some(10));
    for _ in 0..3 {
        assert!(rig.boot().status.success()); // the image "hangs": no health check
    }
    let o = rig.boot();
    assert!(
        text(&o).contains("booted slot b version 2.0"),
        "{}",
        text(&o)
    );
    let o = rig.update();
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert_eq!(rig.reported()["state"], "rolled-back");
}

fn now_ms() -> i64 {
    palisade_core::Clock::now_ms(&palisade_core::SystemClock)
}

impl Rig {
    /// A TUF metadata file as the repository serves it.
    fn tuf(&self, name: &str) -> Vec<u8> {
        self.server.document(&format!("tuf/{name}"))
    }

    /// Serves `body` as TUF metadata file `name` behind the server's back.
    fn plant_tuf(&self, name: &str, body: &[u8]) {
        self.server.plant_document(&format!("tuf/{name}"), body);
    }

    fn online_key(&self, role: &str) -> PathBuf {
        self.server
            .data
            .join("tuf/online")
            .join(format!("{role}.pk8"))
    }

    fn blob(&self, image: &Path) -> PathBuf {
        let sha = palisade_pki::sha256_hex(&std::fs::read(image).unwrap());
        self.server
            .data
            .join("blobs/sha256")
            .join(&sha[..2])
            .join(&sha[2..])
    }

    /// The stored signed assignment and its counter.
    fn stored_assignment(&self) -> (u64, String) {
        let out = self.server.sql(
            "SELECT counter || ' ' || signed FROM device_assignments WHERE device_id = 'cam-1'",
        );
        let (c, signed) = out.split_once(' ').unwrap();
        (c.parse().unwrap(), signed.to_owned())
    }

    /// Puts `signed` (with `counter`) where the server serves the device's
    /// assignment from: what a compromised director or database does.
    fn plant_assignment(&self, counter: u64, signed: &str) {
        let sql = format!(
            "UPDATE device_assignments SET counter = {counter}, signed = '{}' WHERE device_id = 'cam-1'",
            signed.replace('\'', "''")
        );
        self.server.sql(&sql);
    }

    /// An assignment signed with `key` (PKCS#8 Ed25519), planted with the
    /// next counter.
    fn forge_assignment(
        &self,
        key: &[u8],
        edit: impl FnOnce(&mut palisade_release::director::Assignment),
    ) {
        let (counter, signed) = self.stored_assignment();
        let signed: palisade_release::director::SignedAssignment =
            serde_json::from_str(&signed).unwrap();
        let payload =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &signed.payload)
                .unwrap();
        let mut a: palisade_release::director::Assignment =
            serde_json::from_slice(&payload).unwrap();
        a.counter = counter + 1;
        edit(&mut a);
        let forged = palisade_release::director::sign_assignment(&a, key).unwrap();
        self.plant_assignment(a.counter, &serde_json::to_string(&forged).unwrap());
    }

    /// What an attacker holding the online snapshot and timestamp keys
    /// serves: `targets` (as given), a snapshot over it claiming targets
    /// version `+ claim` and a timestamp expiring at `expires_ms`.
    fn forge_online_metadata(&self, targets: &[u8], claim: u64, expires_ms: i64) {
        use tough::schema::{Hashes, Signed, Snapshot, Targets, Timestamp};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let root: Signed<tough::schema::Root> =
            serde_json::from_slice(&self.tuf("root.json")).unwrap();
        let t: Signed<Targets> = serde_json::from_slice(targets).unwrap();
        let meta = |buf: &[u8], version: u64| tough::schema::Metafile {
            length: Some(buf.len() as u64),
            hashes: Some(Hashes {
                sha256: ring::digest::digest(&ring::digest::SHA256, buf)
                    .as_ref()
                    .to_vec()
                    .into(),
                _extra: Default::default(),
            }),
            version: std::num::NonZeroU64::new(version).unwrap(),
            _extra: Default::default(),
        };
        let old_snap: Signed<Snapshot> =
            serde_json::from_slice(&self.tuf("snapshot.json")).unwrap();
        let mut snap = Snapshot::new(
            "1.0.0".into(),
            old_snap.signed.version.checked_add(1).unwrap(),
            palisade_server::tuf::expiry(now_ms() + 86_400_000).unwrap(),
        );
        snap.meta.insert(
            "targets.json".into(),
            meta(targets, t.signed.version.get() + claim),
        );
        let snap_buf = rt
            .block_on(palisade_server::tuf::sign_role(
                snap.clone(),
                &root.signed,
                &[self.online_key("snapshot")],
            ))
            .unwrap();
        let old_ts: Signed<Timestamp> =
            serde_json::from_slice(&self.tuf("timestamp.json")).unwrap();
        let mut ts = Timestamp::new(
            "1.0.0".into(),
            old_ts.signed.version.checked_add(1).unwrap(),
            palisade_server::tuf::expiry(expires_ms).unwrap(),
        );
        ts.meta
            .insert("snapshot.json".into(), meta(&snap_buf, snap.version.get()));
        let ts_buf = rt
            .block_on(palisade_server::tuf::sign_role(
                ts,
                &root.signed,
                &[self.online_key("timestamp")],
            ))
            .unwrap();
        self.plant_tuf("targets.json", targets);
        self.plant_tuf("snapshot.json", &snap_buf);
        self.plant_tuf("timestamp.json", &ts_buf);
    }

    /// A device with 2.0 (security version 2, for rev-b) committed and
    /// 3.0 published (security version 3).
    fn with_installed_release() -> Option<(Self, PathBuf)> {
        let rig = Self::new()?;
        if !have("sqlite3") {
            return None;
        }
        rig.release("2.0", 2, b"cam firmware 2.0", &["rev-b"]);
        let three = rig.release("3.0", 3, &vec![3u8; 200_000], &["rev-b"]);
        rig.publish();
        rig.device();
        rig.install("2.0");
        Some((rig, three))
    }
}

#[test]
fn a_delta_rebuilds_the_signed_image_and_a_corrupt_one_falls_back_to_the_full_image() {
    let Some(rig) = Rig::new() else { return };
    if !have("curl") {
        return;
    }
    // Firmware-like images: 1.1 changes a few regions of 1.0.
    let mut rng = Rng(7);
    let v10: Vec<u8> = (0..2 << 20).map(|_| (rng.next_u64() >> 60) as u8).collect();
    let mut v11 = v10.clone();
    for at in [1000usize, 700_000, 1_500_000] {
        v11[at..at + 300].fill(0xa5);
    }
    let mut v12 = v11.clone();
    v12[2_000_000..2_000_100].fill(0x5a);
    rig.release("1.0", 1, &v10, &[]);
    rig.release("1.1", 1, &v11, &[]);
    rig.release("1.2", 1, &v12, &[]);
    rig.publish();
    rig.device();
    rig.install("1.0");
    let deltas = |version: &str| {
        rig.assign(version);
        let o = rig
            .agent()
            .env_remove("PALISADE_AGENT_NO_DELTAS")
            .args(["update", "--once"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(10), "{}", text(&o));
        assert!(rig.boot().status.success());
        let c = rig.update();
        assert!(
            text(&c).contains(&format!("committed {version}")),
            "{}",
            text(&c)
        );
        text(&o)
    };
    let out = deltas("1.1");
    assert!(out.contains("installed from a delta"), "{out}");
    let slot = if rig.env_has("boot_slot=a") { "a" } else { "b" };
    assert_eq!(
        std::fs::read(rig.dev.join(format!("slot-{slot}.img"))).unwrap()[..v11.len()],
        v11[..]
    );

    // The delta 1.1 → 1.2 is made, then corrupted in the blob store: the
    // device notices (the rebuilt image is not the signed one) and downloads
    // the full image instead.
    let sha11 = palisade_pki::sha256_hex(&v11);
    let got = rig.d.join("delta.zst");
    let o = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--cacert",
            s(&rig.server.data.join("ca/root.pem")),
            "-o",
            s(&got),
        ])
        .arg(format!(
            "{}/tuf/deltas/cam/1.2.img?from={sha11}",
            rig.server.url
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let delta = std::fs::read(&got).unwrap();
    assert!(delta.len() < 64 * 1024, "delta is {} bytes", delta.len());
    let blob = rig.blob(&got);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = deltas("1.2");
    assert!(out.contains("downloading in full"), "{out}");
    assert!(!out.contains("installed from a delta"), "{out}");
}

#[test]
fn arbitrary_software() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    rig.assign("3.0");
    let other =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    rig.forge_assignment(other.as_ref(), |a| a.version = "3.0-evil".into());
    rig.refused("not signed by the director key");
}

#[test]
fn rollback() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    // 2.0 is a genuine, signed release, but below the floor 3.0 set.
    rig.install("3.0");
    rig.assign("2.0");
    rig.refused("rollback");
}

#[test]
fn fast_forward() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    rig.assign("3.0");
    // The online keys sign a snapshot claiming a targets version the offline
    // targets keys never signed.
    let targets = rig.tuf("targets.json");
    rig.forge_online_metadata(&targets, 100, now_ms() + 3_600_000);
    rig.refused("failed verification");
}

#[test]
fn indefinite_freeze() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    rig.assign("3.0");
    // A mirror keeps serving a timestamp that has expired.
    let targets = rig.tuf("targets.json");
    let saved: Vec<(&str, Vec<u8>)> = ["snapshot.json", "timestamp.json"]
        .into_iter()
        .map(|n| (n, rig.tuf(n)))
        .collect();
    rig.forge_online_metadata(&targets, 0, now_ms() - 60_000);
    rig.refused("expired");
    // An expired director assignment is refused too.
    for (name, b) in saved {
        rig.plant_tuf(name, &b);
    }
    rig.assign("3.0");
    let director = std::fs::read(rig.online_key("director")).unwrap();
    rig.forge_assignment(&director, |a| a.expires_ms = now_ms() - 1);
    rig.refused("expired");
}

#[test]
fn mix_and_match() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    let old_targets = rig.tuf("targets.json");
    rig.release("3.1", 3, b"cam firmware 3.1", &[]);
    rig.publish();
    rig.assign("3.1");
    // The current snapshot with an older (genuinely signed) targets role.
    rig.plant_tuf("targets.json", &old_targets);
    rig.refused("failed verification");
}

#[test]
fn endless_data() {
    let Some((rig, three)) = Rig::with_installed_release() else {
        return;
    };
    rig.assign("3.0");
    let blob = rig.blob(&three);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&blob)
        .unwrap();
    std::io::Write::write_all(&mut f, &vec![0u8; 1 << 20]).unwrap();
    rig.refused("endless data");
}

#[test]
fn wrong_hardware() {
    let Some((mut rig, _)) = Rig::with_installed_release() else {
        return;
    };
    rig.hardware = "rev-a".into();
    rig.assign("3.0");
    rig.refused("not for hardware rev-a");
}

#[test]
fn director_repository_disagreement() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    rig.assign("3.0");
    // A compromised director points the device at other bytes.
    let director = std::fs::read(rig.online_key("director")).unwrap();
    rig.forge_assignment(&director, |a| a.sha256 = "ab".repeat(32));
    rig.refused("disagree");
}

#[test]
fn one_compromised_key_below_threshold() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    // The attacker holds one of the two targets keys, the online keys and
    // the director key, and lists its own image.
    let evil = rig.d.join("evil.img");
    std::fs::write(&evil, b"evil firmware").unwrap();
    let sha = palisade_pki::sha256_hex(b"evil firmware");
    let mut draft: serde_json::Value =
        serde_json::from_str(&rig.server.cli_ok(&["tuf", "targets-draft"])).unwrap();
    let mut t = draft["targets"]["cam/3.0.img"].clone();
    t["hashes"]["sha256"] = sha.clone().into();
    t["length"] = 13.into();
    t["custom"]["security_version"] = 9.into();
    draft["targets"]["cam/9.0.img"] = t;
    let draft_path = rig.d.join("evil-draft.json");
    std::fs::write(&draft_path, draft.to_string()).unwrap();
    let signed = rig.d.join("evil-targets.json");
    palisade_ok(&[
        "keys",
        "sign-targets",
        "--dir",
        s(&rig.keys),
        "--root",
        s(&rig.root),
        "--key",
        "targets-1,targets-2",
        "--draft",
        s(&draft_path),
        "--out",
        s(&signed),
    ]);
    // Only the compromised key's signature.
    let mut one: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    one["signatures"].as_array_mut().unwrap().truncate(1);
    rig.forge_online_metadata(one.to_string().as_bytes(), 0, now_ms() + 3_600_000);
    rig.assign("3.0");
    let director = std::fs::read(rig.online_key("director")).unwrap();
    rig.forge_assignment(&director, |a| {
        a.target = "cam/9.0.img".into();
        a.sha256 = sha;
        a.length = 13;
        a.security_version = 9;
    });
    rig.refused("failed verification");
}

#[test]
fn image_swapped_in_blob_store() {
    let Some((rig, three)) = Rig::with_installed_release() else {
        return;
    };
    rig.assign("3.0");
    let blob = rig.blob(&three);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&blob, bytes).unwrap();
    rig.refused("swapped or corrupt");
    assert!(!rig.env_has("slot_a_version=3.0"), "{}", rig.printenv());
}

#[test]
fn replayed_director_assignment() {
    let Some((rig, _)) = Rig::with_installed_release() else {
        return;
    };
    let (old_counter, old) = rig.stored_assignment();
    rig.install("3.0");
    rig.plant_assignment(old_counter, &old);
    rig.refused("replayed");
}

/// Starts `c`, SIGKILLs it after `delay` if it is still running; whether it
/// was killed.
fn run_and_kill(mut c: Command, delay: std::time::Duration) -> bool {
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if started.elapsed() >= delay {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

#[test]
fn power_cut_at_random_points_never_bricks_the_device() {
    let Some(rig) = Rig::new() else { return };
    let seed = std::env::var("PALISADE_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms().unsigned_abs() | 1);
    let mut rng = Rng(seed);
    let images: Vec<Vec<u8>> = (0..2u8)
        .map(|i| {
            (0..12 * 1024 * 1024 + 12_345)
                .map(|_| (rng.next_u64() >> 56) as u8 ^ i)
                .collect()
        })
        .collect();
    rig.release("1.0", 1, &images[0], &[]);
    rig.release("2.0", 1, &images[1], &[]);
    rig.publish();
    rig.device();
    let known: Vec<String> = images
        .iter()
        .map(|b| palisade_pki::sha256_hex(b))
        .chain([palisade_pki::sha256_hex(b"cam factory image 0.9")])
        .collect();

    // Calibrate: how long an install, a boot and a commit take here.
    rig.assign("1.0");
    let t0 = std::time::Instant::now();
    assert_eq!(rig.update().status.code(), Some(10));
    let install = t0.elapsed();
    let t0 = std::time::Instant::now();
    assert!(rig.boot().status.success());
    let boot = t0.elapsed().max(std::time::Duration::from_millis(5));
    let t0 = std::time::Instant::now();
    assert!(rig.update().status.success());
    let commit = t0.elapsed();

    let ctl = palisade_agent::ota::BootControl::open(&rig.env_config()).unwrap();
    let progress = rig.dev.join("state/ota/progress.json");
    let versions = ["1.0", "2.0"];
    let mut next = 1;
    let (mut kills, mut bricked) = (0u32, 0u32);
    let mut phases = std::collections::BTreeMap::<&str, u32>::new();
    let mut rounds = 0;
    let mut resumed = 0;
    while kills < 220 {
        rounds += 1;
        assert!(rounds < 2_000, "the power-cut loop did not make progress");
        let env = ctl.read().unwrap();
        let active = env.active_slot();
        let running = palisade_agent::ota::slot_image(&env, active).map(|i| i.version);
        // Once the assigned release runs (or was rolled back), assign the other.
        if !env.in_trial() && env.get("palisade_trial").is_none() {
            let (counter, _) = rig.stored_assignment();
            let done: u64 = std::fs::read_to_string(rig.dev.join("state/ota/counter"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if done >= counter {
                if running.as_deref() == Some(versions[1 - next]) {
                    rig.assign(versions[next]);
                    next = 1 - next;
                } else {
                    // Rolled back (a cut during the trial): assign it again.
                    rig.assign(versions[1 - next]);
                }
            }
        }
        // Cut the power during the agent's cycle or during a boot.
        let in_trial = env.in_trial();
        let killed_boot = rng.below(6) == 0;
        let killed = if killed_boot {
            let d = std::time::Duration::from_micros(rng.below(boot.as_micros() as u64));
            run_and_kill(rig.agent_boot_cmd(), d)
        } else {
            let span = if in_trial { commit } else { install };
            let d = std::time::Duration::from_micros(rng.below(span.as_micros() as u64 * 6 / 5));
            let mut c = rig.agent();
            c.args(["update", "--once"]);
            run_and_kill(c, d)
        };
        if killed {
            kills += 1;
            let phase = if killed_boot {
                "trial boot / boot"
            } else if in_trial {
                "health check and commit"
            } else if ctl.read().unwrap().in_trial() {
                "environment update"
            } else if progress.exists() {
                "download and write"
            } else {
                "metadata and download start"
            };
            *phases.entry(phase).or_default() += 1;
            if phase == "download and write" && resumed < 3 {
                // The next cycle continues where the synced part ends (HTTP Range).
                let o = rig.agent().args(["update", "--once"]).output().unwrap();
                assert!(text(&o).contains("resuming the download"), "{}", text(&o));
                resumed += 1;
            }
        }
        // Power comes back: the device must boot an image that verifies.
        let o = rig.boot();
        let out = text(&o);
        let ok = o.status.success() && known.iter().any(|k| out.contains(&format!("sha256 {k}")));
        if !ok {
            bricked += 1;
            eprintln!("BRICKED after kill {kills}: {out}");
        }
        // Independently: the booted slot's bytes hash to the recorded image.
        let env = ctl.read().unwrap();
        let slot = env.active_slot();
        let img = palisade_agent::ota::slot_image(&env, slot).unwrap();
        let path = rig.dev.join(format!("slot-{}.img", slot.as_str()));
        assert!(
            palisade_agent::ota::slot_verifies(&path, &img),
            "slot {} does not hold its recorded image",
            slot.as_str()
        );
    }
    eprintln!(
        "power-cut: {kills} SIGKILLs in {rounds} rounds (seed {seed}); by phase: {phases:?}; \
         install {install:?}, boot {boot:?}, commit {commit:?}; bricked devices: {bricked}"
    );
    assert_eq!(bricked, 0, "seed {seed}");
    assert!(resumed > 0, "no interrupted download was resumed");
    assert!(
        phases.len() >= 4,
        "kills were not spread over the phases: {phases:?}"
    );
}
