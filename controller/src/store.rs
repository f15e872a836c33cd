//! The artifact store: content-addressed by the SHA-256 of the uncompressed bytes, kept
//! zstd-compressed, behind a small trait so an S3-compatible backend can be added.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use edgefleet_shared::compress::{DEFAULT_LEVEL, compress};
use edgefleet_shared::verify::sha256_hex;

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
    /// No such artifact.
    #[error("no artifact {0}")]
    NotFound(String),
}

/// Where compressed artifacts live.
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` (compressing them); idempotent for identical content.
    fn put(&self, bytes: &[u8]) -> Result<StoredArtifact, StoreError>;
    /// Opens the compressed bytes of an artifact, with their length.
    fn open_compressed(&self, sha256: &str) -> Result<(Box<dyn ReadSeek>, u64), StoreError>;
    /// Local path of the compressed file, when the store is a filesystem (for efficient serving).
    fn local_path(&self, sha256: &str) -> Option<PathBuf>;
    /// Stores bytes as they are (a delta, already compressed) under their own digest.
    fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError>;
    /// Local path of a blob, when the store is a filesystem.
    fn blob_path(&self, sha256: &str) -> Option<PathBuf>;
}

/// `Read + Seek`, boxed.
pub trait ReadSeek: Read + std::io::Seek + Send {}
impl<T: Read + std::io::Seek + Send> ReadSeek for T {}

/// Filesystem store: `ROOT/ab/cdef….zst`, written to a temp file, fsynced and renamed so a
/// crash never leaves a partial artifact under its address.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(|source| StoreError::Io { path: root.into(), source })?;
        Ok(FsStore { root: root.into() })
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        // Addresses are produced by us, but callers pass user input here: only hex passes.
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return None;
        }
        Some(self.root.join(&sha256[..2]).join(format!("{}.zst", &sha256[2..])))
    }

    /// Writes `bytes` to `path` through a synced temp file and a rename.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let io = |path: &Path, source| StoreError::Io { path: path.into(), source };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, e))?;
        tmp.write_all(bytes).map_err(|e| io(path, e))?;
        tmp.as_file().sync_all().map_err(|e| io(path, e))?;
        tmp.persist(path).map_err(|e| io(path, e.error))?;
        Ok(())
    }
}

impl ArtifactStore for FsStore {
    fn put(&self, bytes: &[u8]) -> Result<StoredArtifact, StoreError> {
        let sha256 = sha256_hex(bytes);
        let path = self.path(&sha256).ok_or_else(|| StoreError::NotFound(sha256.clone()))?;
        let io = |path: &Path, source| StoreError::Io { path: path.into(), source };
        if let Ok(existing) = fs::read(&path) {
            return Ok(StoredArtifact {
                compressed_sha256: sha256_hex(&existing),
                compressed_size: existing.len() as u64,
                size: bytes.len() as u64,
                sha256,
            });
        }
        let packed = compress(bytes, DEFAULT_LEVEL).map_err(|e| io(&path, e))?;
        self.write_atomic(&path, &packed)?;
        Ok(StoredArtifact {
            compressed_sha256: sha256_hex(&packed),
            compressed_size: packed.len() as u64,
            size: bytes.len() as u64,
            sha256,
        })
    }

    fn open_compressed(&self, sha256: &str) -> Result<(Box<dyn ReadSeek>, u64), StoreError> {
        let path = self.path(sha256).ok_or_else(|| StoreError::NotFound(sha256.into()))?;
        let f = fs::File::open(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(sha256.into()),
            _ => StoreError::Io { path: path.clone(), source },
        })?;
        let len = f.metadata().map_err(|source| StoreError::Io { path: path.clone(), source })?.len();
        Ok((Box::new(f), len))
    }

    fn local_path(&self, sha256: &str) -> Option<PathBuf> {
        self.path(sha256)
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        let sha256 = sha256_hex(bytes);
        let path = self.blob_path(&sha256).ok_or_else(|| StoreError::NotFound(sha256.clone()))?;
        if !path.is_file() {
            self.write_atomic(&path, bytes)?;
        }
        Ok((sha256, bytes.len() as u64))
    }

    fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        let artifact = self.path(sha256)?;
        Some(self.root.join("blobs").join(artifact.strip_prefix(&self.root).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_shared::compress::decompress_to_vec;

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).expect("store");
        let a = store.put(b"hello hello hello hello").expect("put");
        assert_eq!(a, store.put(b"hello hello hello hello").expect("again"));
        let (mut r, len) = store.open_compressed(&a.sha256).expect("open");
        let mut packed = Vec::new();
        r.read_to_end(&mut packed).expect("read");
        assert_eq!(len, a.compressed_size);
        assert_eq!(decompress_to_vec(&packed, a.size).expect("unpack"), b"hello hello hello hello");
        assert!(matches!(store.open_compressed("../../etc/passwd"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn blobs_are_kept_as_given_under_their_own_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).expect("store");
        let (sha, size) = store.put_blob(b"already compressed").expect("put");
        assert_eq!((sha.clone(), size), (sha256_hex(b"already compressed"), 18));
        assert_eq!(std::fs::read(store.blob_path(&sha).expect("path")).expect("read"), b"already compressed");
        assert_eq!(store.put_blob(b"already compressed").expect("again").0, sha);
        assert!(store.blob_path("../x").is_none());
    }
}
