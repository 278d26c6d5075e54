//! A TUF key ceremony with `palisade keys` (threshold root and targets keys,
//! generated at test time) and python-tuf's `ngclient` (`peers/tuf_client.py`)
//! as the independent client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{ServerProc, palisade_bin, palisade_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Offline keys (`root-1..3`, `targets-1..2`) and the server's online keys,
/// in `dir`.
#[derive(Debug)]
pub struct Ceremony {
    /// The offline keys' directory.
    pub keys: PathBuf,
    /// Where [`Ceremony::sign_root`] writes the trusted root by default.
    pub root: PathBuf,
    online: PathBuf,
}

impl Ceremony {
    /// Generates the offline keys and fetches `server`'s online keys.
    pub fn new(server: &ServerProc, dir: &Path) -> Self {
        let keys = dir.join("ceremony");
        palisade_ok(&[
            "keys",
            "generate",
            "--dir",
            s(&keys),
            "root-1",
            "root-2",
            "root-3",
            "targets-1",
            "targets-2",
        ]);
        let online = dir.join("online.json");
        std::fs::write(&online, server.cli_ok(&["tuf", "online-keys"]))
            .unwrap_or_else(|e| panic!("writing {}: {e}", online.display()));
        Self {
            keys,
            root: dir.join("root.json"),
            online,
        }
    }

    /// Signs a root (2 of 3 root keys, 2 of 2 targets keys) with the keys
    /// in `sign_with` into `out`: the `palisade keys root` run.
    pub fn sign_root(&self, sign_with: &str, out: &Path) -> Output {
        self.sign_root_as("root-1,root-2,root-3", 1, None, sign_with, out)
    }

    /// Signs root `version` with `root_keys` (2 of them needed), the 2-of-2
    /// targets keys and the online keys, by `sign_with`, into `out`; when
    /// rotating, `previous` is the current root, whose keys sign too.
    pub fn sign_root_as(
        &self,
        root_keys: &str,
        version: u64,
        previous: Option<&Path>,
        sign_with: &str,
        out: &Path,
    ) -> Output {
        let mut c = Command::new(palisade_bin());
        c.args(["keys", "root", "--dir", s(&self.keys)])
            .args(["--root-key", root_keys, "--root-threshold", "2"])
            .args([
                "--targets-key",
                "targets-1,targets-2",
                "--targets-threshold",
                "2",
            ])
            .args(["--root-version", &version.to_string()])
            .args(["--online-keys", s(&self.online), "--sign-with", sign_with])
            .args(["--out", s(out)]);
        if let Some(p) = previous {
            c.args(["--previous-root", s(p)]);
        }
        c.output()
            .unwrap_or_else(|e| panic!("running palisade keys root: {e}"))
    }

    /// Names these online keys (`palisade tuf online-keys [--next]`'s output)
    /// in the roots signed from now on.
    pub fn use_online_keys(&self, json: &str) {
        std::fs::write(&self.online, json)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.online.display()));
    }

    /// Signs the targets draft `draft` with `keys` into `out`.
    pub fn sign_targets(&self, keys: &str, draft: &Path, out: &Path) {
        sign_targets(&self.keys, &self.root, keys, draft, out);
    }
}

fn sign_targets(keys_dir: &Path, root: &Path, keys: &str, draft: &Path, out: &Path) {
    palisade_ok(&[
        "keys",
        "sign-targets",
        "--dir",
        s(keys_dir),
        "--root",
        s(root),
        "--key",
        keys,
        "--draft",
        s(draft),
        "--out",
        s(out),
    ]);
}

/// The whole ceremony: root keys 2-of-3, targets keys 2-of-2, the server's
/// online keys; the root is installed on the server. Returns the ceremony's
/// key directory and the root file.
pub fn tuf_ceremony(server: &ServerProc, dir: &Path) -> (PathBuf, PathBuf) {
    let c = Ceremony::new(server, dir);
    let o = c.sign_root("root-1,root-2", &c.root);
    assert!(o.status.success(), "{}", crate::text(&o));
    server.cli_ok(&["tuf", "set-root", s(&c.root)]);
    (c.keys, c.root)
}

/// Signs the server's targets draft (every accepted release) with the
/// ceremony `keys` (comma-separated) and publishes it; the CLI's output.
pub fn publish_targets(
    server: &ServerProc,
    dir: &Path,
    keys_dir: &Path,
    root: &Path,
    keys: &str,
) -> Output {
    let draft = dir.join("draft.json");
    std::fs::write(&draft, server.cli_ok(&["tuf", "targets-draft"]))
        .unwrap_or_else(|e| panic!("writing {}: {e}", draft.display()));
    let signed = dir.join("targets-signed.json");
    sign_targets(keys_dir, root, keys, &draft, &signed);
    server.cli(&["tuf", "publish", s(&signed)])
}

/// python-tuf's client: refreshes `server`'s metadata from the trusted
/// `root` and downloads `target` into `dir/downloads`, verified.
pub fn tuf_client(server: &ServerProc, dir: &Path, root: &Path, target: &str) -> Output {
    tuf_client_at(server, dir, root, target, None)
}

/// [`tuf_client`] keeping its trusted metadata in `metadata` between runs
/// (as a device does), if given.
pub fn tuf_client_at(
    server: &ServerProc,
    dir: &Path,
    root: &Path,
    target: &str,
    metadata: Option<&Path>,
) -> Output {
    let mut c = Command::new("python3");
    c.arg(crate::peer_script("tuf_client.py"))
        .args(["--root", s(root)])
        .args(["--metadata-url", &format!("{}/tuf/metadata/", server.url)])
        .args(["--targets-url", &format!("{}/tuf/targets/", server.url)])
        .args(["--target", target, "--out", s(&dir.join("downloads"))])
        .env("REQUESTS_CA_BUNDLE", server.data.join("ca/root.pem"))
        .env("SSL_CERT_FILE", server.data.join("ca/root.pem"));
    if let Some(m) = metadata {
        c.args(["--metadata-dir", s(m)]);
    }
    c.output()
        .unwrap_or_else(|e| panic!("running the TUF client: {e}"))
}
