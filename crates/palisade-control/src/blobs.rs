//! Content-addressed blobs (firmware images, SBOMs, provenance envelopes) behind
//! the [`BlobStore`] trait; the local filesystem is the default. A blob is
//! written to a temporary file while it is hashed, synced, and renamed to its
//! SHA-256: a blob that exists is always complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::digest;

/// Where blobs live.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Starts a new blob.
    fn writer(&self) -> io::Result<Box<dyn BlobWriter>>;
    /// Opens a blob by SHA-256 (hex), if it exists.
    fn open(&self, sha256: &str) -> io::Result<Option<File>>;
    /// A blob's length, if it exists.
    fn len(&self, sha256: &str) -> io::Result<Option<u64>> {
        self.open(sha256)?
            .map(|f| f.metadata().map(|m| m.len()))
            .transpose()
    }
}

/// A blob being written.
pub trait BlobWriter: Send {
    /// Appends bytes.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Syncs and stores the blob; returns its SHA-256 (hex) and length.
    fn finish(self: Box<Self>) -> io::Result<(String, u64)>;
}

/// Blobs under a directory: `sha256/<2 hex>/<62 hex>`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: PathBuf,
}

fn valid_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl FsBlobStore {
    /// Blobs under `dir` (created if missing, 0700).
    pub fn new(dir: &Path) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(dir.join("tmp"))?;
        fs::create_dir_all(dir.join("sha256"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        // Leftovers of interrupted uploads.
        for e in fs::read_dir(dir.join("tmp"))? {
            let _ = fs::remove_file(e?.path());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join("sha256").join(&sha[..2]).join(&sha[2..])
    }
}

struct FsWriter {
    tmp: PathBuf,
    file: File,
    ctx: digest::Context,
    n: u64,
    store: FsBlobStore,
}

impl BlobWriter for FsWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.ctx.update(chunk);
        self.n += chunk.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.n
    }

    fn finish(self: Box<Self>) -> io::Result<(String, u64)> {
        self.file.sync_all()?;
        let sha = hex::encode(self.ctx.clone().finish());
        let to = self.store.path(&sha);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&self.tmp, &to)?;
        Ok((sha, self.n))
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Unfinished (refused or interrupted): leave nothing behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

impl BlobStore for FsBlobStore {
    fn writer(&self) -> io::Result<Box<dyn BlobWriter>> {
        let mut raw = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| io::Error::other("random number generator failed"))?;
        let tmp = self.dir.join("tmp").join(hex::encode(raw));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Box::new(FsWriter {
            tmp,
            file,
            ctx: digest::Context::new(&digest::SHA256),
            n: 0,
            store: self.clone(),
        }))
    }

    fn open(&self, sha256: &str) -> io::Result<Option<File>> {
        if !valid_sha(sha256) {
            return Ok(None);
        }
        match File::open(self.path(sha256)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Stores `bytes` as one blob.
pub fn put_bytes(store: &dyn BlobStore, bytes: &[u8]) -> io::Result<(String, u64)> {
    let mut w = store.writer()?;
    w.write(bytes)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_their_hash_and_never_partial() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::new(dir.path()).unwrap();
        let (sha, n) = put_bytes(&s, b"hello").unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.len(&sha).unwrap(), Some(5));
        let mut w = s.writer().unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(s.open("../../etc/passwd").unwrap().is_none());
        assert!(s.open(&"A".repeat(64)).unwrap().is_none());
    }
}
