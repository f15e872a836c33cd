//! The artifact store: content-addressed by the SHA-256 of the uncompressed bytes, kept
//! zstd-compressed, on the data directory's filesystem ([`FsStore`], the default) or in an
//! S3-compatible bucket ([`S3Store`], `[artifacts.s3]`) that several controller replicas share.
//!
//! Writes and whole reads are blocking (the registry calls them from blocking threads while it
//! validates a push or makes a delta); serving is async and streams a byte range, and an S3
//! store can instead hand out a short-lived presigned URL. Whatever serves the bytes, a device
//! accepts them only if they match the digest and size in its signed document.

mod copy;
mod fs;
mod s3;

use std::ops::Range;
use std::path::PathBuf;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use copy::{CopyReport, copy};
pub use fs::FsStore;
pub use s3::S3Store;

/// Facts about a stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// SHA-256 (hex) of the uncompressed bytes: the address.
    pub sha256: String,
    /// Uncompressed size.
    pub size: u64,
    /// SHA-256 (hex) of the compressed bytes.
    pub compressed_sha256: String,
    /// Compressed size.
    pub compressed_size: u64,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem error.
    #[error("artifact store {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The object store refused or could not be reached.
    #[error("object store: {0}")]
    Remote(String),
    /// No such artifact.
    #[error("no artifact {0}")]
    NotFound(String),
}

/// One stored object, by the digest it is kept under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// An artifact's compressed bytes, under the digest of its uncompressed bytes.
    Artifact(&'a str),
    /// Bytes kept as given (a delta, already compressed), under their own digest.
    Blob(&'a str),
}

impl Object<'_> {
    /// The digest it is addressed by.
    pub fn sha256(&self) -> &str {
        match self {
            Object::Artifact(s) | Object::Blob(s) => s,
        }
    }

    /// `artifacts/ab/cdef….zst` or `blobs/ab/cdef….zst`; `None` unless the digest is 64 lowercase
    /// hex digits (callers pass user input here).
    pub fn key(&self) -> Option<String> {
        let sha = self.sha256();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let dir = match self {
            Object::Artifact(_) => "artifacts",
            Object::Blob(_) => "blobs",
        };
        Some(format!("{dir}/{}/{}.zst", &sha[..2], &sha[2..]))
    }

    fn not_found(&self) -> StoreError {
        StoreError::NotFound(self.sha256().to_owned())
    }
}

/// A stream of stored bytes, for a response body.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Where compressed artifacts live.
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` (compressing them); idempotent for identical content, and an object already
    /// stored is never rewritten (its compressed digest is what devices were told). Blocking.
    fn put(&self, bytes: &[u8]) -> Result<StoredArtifact, StoreError>;
    /// Stores bytes as they are (a delta, already compressed) under their own digest. Blocking.
    fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError>;
    /// The whole stored bytes of an object. Blocking.
    fn read(&self, object: Object<'_>) -> Result<Vec<u8>, StoreError>;
    /// The stored size of an object.
    fn size<'a>(&'a self, object: Object<'a>) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// The bytes `range` of an object (within its size).
    fn stream<'a>(&'a self, object: Object<'a>, range: Range<u64>) -> BoxFuture<'a, Result<ByteStream, StoreError>>;
    /// A short-lived URL that fetches the object directly from the store without credentials;
    /// `None` when the store has no such URLs (the filesystem) or is set to hand none out.
    fn presign<'a>(&'a self, object: Object<'a>) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    /// Checks at start that the store is reachable and writable by us.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Where the store is, for logs (never credentials).
    fn describe(&self) -> String;
}
