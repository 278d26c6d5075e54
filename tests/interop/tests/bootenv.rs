//! The agent's U-Boot environment against libubootenv's `fw_printenv` and
//! `fw_setenv` (Debian `libubootenv-tool`): both read and write the same files,
//! in the redundant layout (two copies, CRCs, flags counter — including its
//! wrap from 255 to 0) and in the single-copy layout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use palisade_bootenv::{BootEnv, Layout, Slot};
use palisade_interop::*;

const SIZE: usize = 0x4000;

fn config(dir: &Path, redundant: bool) -> std::path::PathBuf {
    let cfg = dir.join("fw_env.config");
    let mut text = format!("{} 0x0 0x4000\n", dir.join("env0").display());
    if redundant {
        text.push_str(&format!("{} 0x0 0x4000\n", dir.join("env1").display()));
    }
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn read(dir: &Path, layout: Layout) -> BootEnv {
    let a = std::fs::read(dir.join("env0")).unwrap();
    if layout.redundant {
        let b = std::fs::read(dir.join("env1")).unwrap();
        BootEnv::parse(&[&a, &b], layout).unwrap()
    } else {
        BootEnv::parse(&[&a], layout).unwrap()
    }
}

fn write(dir: &Path, env: &mut BootEnv) {
    let (i, bytes) = env.next_write().unwrap();
    std::fs::write(dir.join(format!("env{i}")), bytes).unwrap();
    env.written();
}

fn printenv(cfg: &Path) -> String {
    let o = Command::new("fw_printenv")
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "fw_printenv: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setenv(cfg: &Path, name: &str, value: &str) {
    let o = Command::new("fw_setenv")
        .arg("-c")
        .arg(cfg)
        .args([name, value])
        .output()
        .unwrap();
    assert!(o.status.success(), "fw_setenv: {}", text(&o));
}

#[test]
fn fw_printenv_and_fw_setenv_share_the_agents_redundant_environment() {
    if !(have("fw_printenv") && have("fw_setenv")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layout = Layout {
        size: SIZE,
        redundant: true,
    };
    let cfg = config(d, true);
    std::fs::write(d.join("env0"), vec![0u8; SIZE]).unwrap();
    std::fs::write(d.join("env1"), vec![0u8; SIZE]).unwrap();

    // The installer starts a trial of slot b.
    let mut env = BootEnv::empty(layout).unwrap();
    env.set("boot_slot", "a").unwrap();
    env.begin_trial(Slot::B, 3).unwrap();
    write(d, &mut env);
    let shown = printenv(&cfg);
    for line in [
        "boot_slot=b",
        "alt_slot=a",
        "upgrade_available=1",
        "bootcount=0",
        "bootlimit=3",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line} missing: {shown}");
    }

    // U-Boot (here fw_setenv) counts a boot; the agent sees it.
    setenv(&cfg, "bootcount", "2");
    let mut env = read(d, layout);
    assert_eq!(env.get("bootcount"), Some("2"));
    assert_eq!(env.active_slot(), Slot::B);

    // The health check passed: the agent commits; fw_printenv agrees.
    env.commit().unwrap();
    write(d, &mut env);
    let shown = printenv(&cfg);
    assert!(shown.lines().any(|l| l == "upgrade_available=0"), "{shown}");
    assert!(shown.lines().any(|l| l == "boot_slot=b"), "{shown}");

    // Many alternating writes from both sides, past the flags counter's wrap.
    for i in 0..300u32 {
        if i % 3 == 0 {
            setenv(&cfg, "counter", &i.to_string());
            env = read(d, layout);
        } else {
            env.set("counter", &i.to_string()).unwrap();
            write(d, &mut env);
        }
        assert_eq!(read(d, layout).get("counter"), Some(i.to_string().as_str()));
    }
    let shown = printenv(&cfg);
    assert!(shown.lines().any(|l| l == "counter=299"), "{shown}");
}

#[test]
fn the_single_copy_layout_is_shared_too() {
    if !(have("fw_printenv") && have("fw_setenv")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layout = Layout {
        size: SIZE,
        redundant: false,
    };
    let cfg = config(d, false);
    let mut env = BootEnv::empty(layout).unwrap();
    env.set("boot_slot", "a").unwrap();
    write(d, &mut env);
    assert!(printenv(&cfg).lines().any(|l| l == "boot_slot=a"));
    setenv(&cfg, "boot_slot", "b");
    assert_eq!(read(d, layout).active_slot(), Slot::B);
}
