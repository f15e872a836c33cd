//! The filesystem store: `ROOT/ab/cdef….zst` for artifacts and `ROOT/blobs/ab/cdef….zst` for
//! blobs, written to a temp file, fsynced and renamed so a crash never leaves a partial object
//! under its address.

use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use edgefleet_shared::compress::{DEFAULT_LEVEL, compress};
use edgefleet_shared::verify::sha256_hex;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::{ArtifactStore, ByteStream, Object, StoreError, StoredArtifact};

/// Filesystem store under one root directory.
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

    /// The file an object lives in (artifacts keep the layout they always had, at the root).
    fn path(&self, object: Object<'_>) -> Option<PathBuf> {
        let key = object.key()?;
        Some(match object {
            Object::Artifact(_) => self.root.join(key.strip_prefix("artifacts/")?),
            Object::Blob(_) => self.root.join(key),
        })
    }

    /// An I/O failure on `path`, a missing file as [`StoreError::NotFound`].
    fn failed(object: Object<'_>, path: &Path, source: std::io::Error) -> StoreError {
        match source.kind() {
            std::io::ErrorKind::NotFound => object.not_found(),
            _ => StoreError::Io { path: path.into(), source },
        }
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
        let path = self.path(Object::Artifact(&sha256)).ok_or_else(|| StoreError::NotFound(sha256.clone()))?;
        if let Ok(existing) = fs::read(&path) {
            return Ok(StoredArtifact {
                compressed_sha256: sha256_hex(&existing),
                compressed_size: existing.len() as u64,
                size: bytes.len() as u64,
                sha256,
            });
        }
        let packed = compress(bytes, DEFAULT_LEVEL).map_err(|source| StoreError::Io { path: path.clone(), source })?;
        self.write_atomic(&path, &packed)?;
        Ok(StoredArtifact {
            compressed_sha256: sha256_hex(&packed),
            compressed_size: packed.len() as u64,
            size: bytes.len() as u64,
            sha256,
        })
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        let sha256 = sha256_hex(bytes);
        let path = self.path(Object::Blob(&sha256)).ok_or_else(|| StoreError::NotFound(sha256.clone()))?;
        if !path.is_file() {
            self.write_atomic(&path, bytes)?;
        }
        Ok((sha256, bytes.len() as u64))
    }

    fn read(&self, object: Object<'_>) -> Result<Vec<u8>, StoreError> {
        let path = self.path(object).ok_or_else(|| object.not_found())?;
        fs::read(&path).map_err(|e| Self::failed(object, &path, e))
    }

    fn size<'a>(&'a self, object: Object<'a>) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let path = self.path(object).ok_or_else(|| object.not_found())?;
            let meta = tokio::fs::metadata(&path).await.map_err(|e| Self::failed(object, &path, e))?;
            Ok(meta.len())
        }
        .boxed()
    }

    fn stream<'a>(&'a self, object: Object<'a>, range: Range<u64>) -> BoxFuture<'a, Result<ByteStream, StoreError>> {
        async move {
            let path = self.path(object).ok_or_else(|| object.not_found())?;
            let mut file = tokio::fs::File::open(&path).await.map_err(|e| Self::failed(object, &path, e))?;
            file.seek(std::io::SeekFrom::Start(range.start)).await.map_err(|e| Self::failed(object, &path, e))?;
            let body = tokio_util::io::ReaderStream::new(file.take(range.end.saturating_sub(range.start)));
            Ok(Box::pin(body) as ByteStream)
        }
        .boxed()
    }

    fn presign<'a>(&'a self, _object: Object<'a>) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        futures::future::ready(Ok(None)).boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        futures::future::ready(
            fs::create_dir_all(&self.root).map_err(|source| StoreError::Io { path: self.root.clone(), source }),
        )
        .boxed()
    }

    fn describe(&self) -> String {
        format!("filesystem {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;
    use edgefleet_shared::compress::decompress_to_vec;

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).expect("store");
        let a = store.put(b"hello hello hello hello").expect("put");
        assert_eq!(a, store.put(b"hello hello hello hello").expect("again"));
        let packed = store.read(Object::Artifact(&a.sha256)).expect("read");
        assert_eq!(packed.len() as u64, a.compressed_size);
        assert_eq!(decompress_to_vec(&packed, a.size).expect("unpack"), b"hello hello hello hello");
        assert!(matches!(store.read(Object::Artifact("../../etc/passwd")), Err(StoreError::NotFound(_))));
        assert!(dir.path().join(&a.sha256[..2]).join(format!("{}.zst", &a.sha256[2..])).is_file());
    }

    #[test]
    fn blobs_are_kept_as_given_under_their_own_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).expect("store");
        let (sha, size) = store.put_blob(b"already compressed").expect("put");
        assert_eq!((sha.clone(), size), (sha256_hex(b"already compressed"), 18));
        assert_eq!(store.read(Object::Blob(&sha)).expect("read"), b"already compressed");
        assert_eq!(store.put_blob(b"already compressed").expect("again").0, sha);
        assert!(matches!(store.read(Object::Artifact(&sha)), Err(StoreError::NotFound(_))));
        assert!(Object::Blob("../x").key().is_none());
    }

    #[tokio::test]
    async fn ranges_stream_exactly_their_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).expect("store");
        let (sha, _) = store.put_blob(b"0123456789").expect("put");
        assert_eq!(store.size(Object::Blob(&sha)).await.expect("size"), 10);
        let part: Vec<bytes::Bytes> =
            store.stream(Object::Blob(&sha), 3..7).await.expect("open").try_collect().await.expect("read");
        assert_eq!(part.concat(), b"3456");
        assert!(matches!(store.size(Object::Artifact(&sha)).await, Err(StoreError::NotFound(_))));
        assert_eq!(store.presign(Object::Blob(&sha)).await.expect("presign"), None);
    }
}
