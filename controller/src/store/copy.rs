//! `edgefleet-controller copy-artifacts`: moves a filesystem store into a bucket, for a controller
//! that outgrows one machine. Every object the database records (artifacts, and deltas) is read,
//! checked against its recorded digest and size, and written byte for byte under the same key,
//! so documents already signed stay valid; objects already in the bucket are left as they are,
//! so an interrupted copy is simply run again.

use edgefleet_shared::verify::sha256_hex;
use serde::Serialize;

use super::{ArtifactStore as _, FsStore, Object, S3Store, StoreError};
use crate::db::Db;

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Objects written to the bucket.
    pub copied: u64,
    /// Objects the bucket already held.
    pub present: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// One object to copy, with what the database says it must be.
struct Expected {
    sha256: String,
    blob: bool,
    stored_sha256: String,
    stored_size: u64,
}

/// Copies every recorded object of `from` into `to`. Blocking.
pub fn copy(db: &Db, from: &FsStore, to: &S3Store) -> Result<CopyReport, StoreError> {
    let expected = db
        .call_blocking(|conn| -> crate::sql::Result<Vec<Expected>> {
            let mut all = Vec::new();
            let mut stmt =
                conn.prepare("SELECT sha256, compressed_sha256, compressed_size FROM artifacts ORDER BY sha256")?;
            for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?)))? {
                let (sha256, stored_sha256, size) = row?;
                all.push(Expected { sha256, blob: false, stored_sha256, stored_size: size as u64 });
            }
            let mut stmt = conn.prepare(
                "SELECT DISTINCT delta_sha256, delta_size FROM deltas WHERE delta_sha256 IS NOT NULL ORDER BY 1",
            )?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (sha256, size) = row?;
                all.push(Expected { stored_sha256: sha256.clone(), sha256, blob: true, stored_size: size as u64 });
            }
            Ok(all)
        })
        .map_err(|e| StoreError::Remote(format!("reading the registry: {e}")))?;
    let mut report = CopyReport::default();
    for e in &expected {
        let object = if e.blob { Object::Blob(&e.sha256) } else { Object::Artifact(&e.sha256) };
        if to.contains(object)? {
            report.present += 1;
            continue;
        }
        let bytes = from.read(object)?;
        if bytes.len() as u64 != e.stored_size || sha256_hex(&bytes) != e.stored_sha256 {
            return Err(StoreError::Remote(format!(
                "{} in the data directory is not what the registry recorded ({} bytes, sha256 {}): restore it from a backup",
                e.sha256, e.stored_size, e.stored_sha256
            )));
        }
        let len = bytes.len() as u64;
        to.put_exact(object, bytes)?;
        report.copied += 1;
        report.bytes += len;
        tracing::info!(object = %e.sha256, bytes = len, "Copied.");
    }
    Ok(report)
}
