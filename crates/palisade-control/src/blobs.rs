//! Content-addressed blobs (firmware images, deltas, SBOMs, provenance
//! envelopes) behind the [`BlobStore`] trait: files under the data directory
//! by default ([`FsBlobStore`]), or an S3-compatible object store shared by
//! the nodes of a cluster ([`s3::S3BlobStore`]). A blob is stored under its
//! SHA-256 only once it is complete, so a blob that exists is whole. Blobs
//! stream both ways in bounded memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use ring::digest;

use crate::error::ServiceError;

pub mod s3;

/// A blob's bytes as they are read (a streaming HTTP body).
pub type BlobBody = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Local storage failed.
    #[error("blob storage: {0}")]
    Io(#[from] io::Error),
    /// The blob store cannot be reached or did not answer in time; retry.
    #[error("the blob store is unavailable: {0}")]
    Unavailable(String),
    /// The blob store answered with an error.
    #[error("the blob store refused {what}: HTTP {status}: {message}")]
    Refused {
        /// What was asked.
        what: String,
        /// Its HTTP status.
        status: u16,
        /// Its message (the S3 error code and text, bounded).
        message: String,
    },
}

impl From<BlobError> for ServiceError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Unavailable(_) => ServiceError::BlobsUnavailable(e.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

/// Part of a blob, being read.
pub struct BlobRead {
    /// The bytes in this read.
    pub len: u64,
    /// The body.
    pub body: BlobBody,
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead").field("len", &self.len).finish()
    }
}

impl BlobRead {
    /// Reads the whole body into memory (for blobs already bounded in size).
    pub async fn bytes(self) -> Result<Bytes, BlobError> {
        Ok(self.body.collect().await?.to_bytes())
    }
}

/// Where blobs live.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Starts a new blob.
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError>;
    /// Reads a blob by SHA-256 (hex): all of it, or bytes `start..=end`
    /// (which must lie inside it); `None` if it does not exist.
    async fn read(
        &self,
        sha256: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobRead>, BlobError>;
    /// A blob's length, if it exists.
    async fn len(&self, sha256: &str) -> Result<Option<u64>, BlobError>;
    /// Whether the store answers (readiness).
    async fn check(&self) -> Result<(), BlobError>;
}

/// A blob being written.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Stores the blob; returns its SHA-256 (hex) and length.
    async fn finish(self: Box<Self>) -> Result<(String, u64), BlobError>;
}

/// Whether `s` is a SHA-256 in lower-case hex (the only names blobs have).
pub fn valid_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A file being written under a temporary name while it is hashed: the
/// local store renames it to its hash, the S3 store uploads it.
struct Spool {
    tmp: PathBuf,
    file: File,
    ctx: digest::Context,
    n: u64,
}

impl Spool {
    fn create(dir: &Path) -> Result<Self, BlobError> {
        let mut raw = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| io::Error::other("random number generator failed"))?;
        let tmp = dir.join(hex::encode(raw));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Self {
            tmp,
            file,
            ctx: digest::Context::new(&digest::SHA256),
            n: 0,
        })
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.ctx.update(chunk);
        self.n += chunk.len() as u64;
        Ok(())
    }

    /// Syncs the file; returns its SHA-256 (hex).
    fn seal(&self) -> io::Result<String> {
        self.file.sync_all()?;
        Ok(hex::encode(self.ctx.clone().finish()))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Uploaded, renamed, refused or interrupted: leave nothing behind.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Where a spooled blob goes once it is whole and hashed.
#[async_trait]
trait Publish: Send + Sync + 'static {
    /// Stores the spooled blob under `sha`.
    async fn publish(&self, sha: &str, spool: &Spool) -> Result<(), BlobError>;
}

/// A blob being spooled, published under its hash when finished.
struct SpoolWriter<P> {
    spool: Spool,
    to: P,
}

#[async_trait]
impl<P: Publish> BlobWriter for SpoolWriter<P> {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        Ok(self.spool.write(chunk)?)
    }

    fn written(&self) -> u64 {
        self.spool.n
    }

    async fn finish(self: Box<Self>) -> Result<(String, u64), BlobError> {
        let sha = self.spool.seal()?;
        self.to.publish(&sha, &self.spool).await?;
        Ok((sha, self.spool.n))
    }
}

/// Creates `dir/tmp` and empties it of interrupted uploads.
fn spool_dir(dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(&tmp)? {
        let _ = fs::remove_file(e?.path());
    }
    Ok(tmp)
}

/// Blobs under a directory: `sha256/<2 hex>/<62 hex>`.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: PathBuf,
}

impl FsBlobStore {
    /// Blobs under `dir` (created if missing, 0700).
    pub fn new(dir: &Path) -> io::Result<Self> {
        spool_dir(dir)?;
        fs::create_dir_all(dir.join("sha256"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join("sha256").join(&sha[..2]).join(&sha[2..])
    }
}

#[async_trait]
impl Publish for FsBlobStore {
    async fn publish(&self, sha: &str, spool: &Spool) -> Result<(), BlobError> {
        let to = self.path(sha);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&spool.tmp, &to)?;
        Ok(())
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(SpoolWriter {
            spool: Spool::create(&self.dir.join("tmp"))?,
            to: self.clone(),
        }))
    }

    async fn read(
        &self,
        sha256: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobRead>, BlobError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        if !valid_sha(sha256) {
            return Ok(None);
        }
        let mut file = match tokio::fs::File::open(self.path(sha256)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let total = file.metadata().await?.len();
        let (start, len) = match range {
            Some((s, e)) if s <= e && e < total => (s, e - s + 1),
            Some(_) => {
                return Err(BlobError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "range outside the blob",
                )));
            }
            None => (0, total),
        };
        file.seek(io::SeekFrom::Start(start)).await?;
        let stream = tokio_util::io::ReaderStream::new(file.take(len));
        let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(stream, |r| {
            r.map(hyper::body::Frame::data)
        }));
        Ok(Some(BlobRead {
            len,
            body: BodyExt::boxed_unsync(body),
        }))
    }

    async fn len(&self, sha256: &str) -> Result<Option<u64>, BlobError> {
        if !valid_sha(sha256) {
            return Ok(None);
        }
        match tokio::fs::metadata(self.path(sha256)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn check(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(self.dir.join("sha256")).await?;
        Ok(())
    }
}

/// Stores `bytes` as one blob.
pub async fn put_bytes(store: &dyn BlobStore, bytes: &[u8]) -> Result<(String, u64), BlobError> {
    let mut w = store.writer().await?;
    w.write(bytes).await?;
    w.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_named_by_their_hash_and_never_partial() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsBlobStore::new(dir.path()).unwrap();
        let (sha, n) = put_bytes(&s, b"hello").await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.len(&sha).await.unwrap(), Some(5));
        let all = s.read(&sha, None).await.unwrap().unwrap();
        assert_eq!(all.len, 5);
        assert_eq!(&all.bytes().await.unwrap()[..], b"hello");
        let part = s.read(&sha, Some((1, 3))).await.unwrap().unwrap();
        assert_eq!(&part.bytes().await.unwrap()[..], b"ell");
        assert!(s.read(&sha, Some((3, 9))).await.is_err());
        let mut w = s.writer().await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(s.read("../../etc/passwd", None).await.unwrap().is_none());
        assert!(s.read(&"A".repeat(64), None).await.unwrap().is_none());
        s.check().await.unwrap();
    }
}
