//! The controller's signing keys and the fleet's trust sets, with rotation.
//!
//! Trust set 1 holds the key made at first start. `edgefleet-controller rotate-key` makes a new
//! key and trust set N+1 = {new key}, signed by the key of set N, and records it in the
//! database (the running controller picks it up within seconds). Devices get the rotations
//! over HTTP and the retained `PREFIX/trust` topic and verify each against the set they hold.
//! During the rotation's overlap a device that still reports the old set gets documents signed
//! by the old key; devices on the new set, and every device once the overlap ends, get the new
//! key's. `--revoke` makes the overlap zero and deletes the old private keys: for a key that may
//! be compromised.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::sql::{Connection, OptionalExtension as _, params};
use edgefleet_shared::keys::{FileKey, PublicKey, Signer};
use edgefleet_shared::trust::{TrustChain, TrustRotation, TrustStore};

use crate::db::{self, Db, DbError, now};

/// Key ring failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// A key file could not be read or written.
    #[error(transparent)]
    Key(#[from] edgefleet_shared::keys::KeyError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The recorded trust sets are inconsistent (edited by hand, or a missing key file).
    #[error("trust sets in the database are inconsistent: {0}")]
    Inconsistent(String),
}

impl From<crate::sql::Error> for KeyRingError {
    fn from(e: crate::sql::Error) -> Self {
        KeyRingError::Db(DbError::from(e))
    }
}

/// One recorded trust set.
#[derive(Debug, Clone)]
struct SetRow {
    version: u64,
    trust: Vec<u8>,
    rotation: Option<TrustRotation>,
    key_file: String,
    overlap_until: u64,
}

#[derive(Debug)]
struct Ring {
    version: u64,
    current: Arc<FileKey>,
    /// Keys of earlier sets still allowed to sign for devices on those sets, until when.
    earlier: Vec<(u64, Arc<FileKey>, u64)>,
    chain: TrustChain,
    trust: Vec<u8>,
}

/// The signing keys in force, shared by everything that signs.
#[derive(Debug)]
pub struct KeyRing {
    root: PathBuf,
    ring: RwLock<Ring>,
}

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    /// The new trust set's version.
    pub version: u64,
    /// The new signing key.
    pub key_id: String,
    /// The key it replaces.
    pub replaced_key_id: String,
    /// Until when the old key still signs for devices not yet rotated (unix seconds).
    pub overlap_until: u64,
    /// Whether the old private keys were deleted.
    pub revoked: bool,
}

fn key_file_name(key_id: &str) -> String {
    format!("keys/controller-{key_id}.key")
}

fn read_sets(conn: &Connection) -> Result<Vec<SetRow>, KeyRingError> {
    let rows = conn
        .prepare("SELECT version, trust, rotation, key_file, overlap_until FROM trust_sets ORDER BY version")?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(version, trust, rotation, key_file, overlap_until)| {
            let rotation = rotation
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|e| KeyRingError::Inconsistent(format!("set {version}: {e}")))?;
            Ok(SetRow { version: version as u64, trust, rotation, key_file, overlap_until: overlap_until as u64 })
        })
        .collect()
}

/// Records trust set 1 (the key made at first start) when the database has none.
pub fn ensure_first_set(conn: &Connection, key: &FileKey, key_file: &str) -> Result<(), KeyRingError> {
    let any: Option<i64> = conn.query_row("SELECT version FROM trust_sets LIMIT 1", [], |r| r.get(0)).optional()?;
    if any.is_none() {
        conn.execute(
            "INSERT INTO trust_sets (version, trust, rotation, key_id, key_file, created_at, overlap_until)
             VALUES (1, ?1, NULL, ?2, ?3, ?4, 0)",
            params![TrustStore::new(1, [key.public_key()]).to_bytes(), key.key_id(), key_file, now()],
        )?;
    }
    Ok(())
}

impl KeyRing {
    /// Loads every recorded set and the private keys still on disk under `root`.
    pub fn load(db: &Db, root: &Path) -> Result<Self, KeyRingError> {
        let sets = db.call_blocking(|conn| read_sets(conn))?;
        let ring = build(root, &sets)?;
        Ok(KeyRing { root: root.to_owned(), ring: RwLock::new(ring) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        // Only whole rings are stored, so a poisoned lock still holds a consistent one.
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reloads when another process (`rotate-key`) recorded a new set; true when it did.
    pub async fn reload(&self, db: &Db) -> Result<bool, KeyRingError> {
        let sets = db.call(|conn| read_sets(conn)).await?;
        let newest = sets.last().map_or(0, |s| s.version);
        if newest == self.version() {
            return Ok(false);
        }
        let ring = build(&self.root, &sets)?;
        tracing::info!(version = ring.version, key_id = %ring.current.key_id(), "Signing key rotated.");
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        Ok(true)
    }

    /// The current trust set's version.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// The current trust file bytes (what new devices are provisioned with).
    pub fn trust_file(&self) -> Vec<u8> {
        self.read().trust.clone()
    }

    /// Every rotation, oldest first.
    pub fn chain(&self) -> TrustChain {
        self.read().chain.clone()
    }

    /// The key to sign a document for a device that last reported trust set `device_version`:
    /// its own set's key while that rotation's overlap lasts, else the current one.
    pub fn signer_for(&self, device_version: Option<u64>, now: u64) -> Arc<FileKey> {
        let ring = self.read();
        if let Some(v) = device_version.filter(|v| *v < ring.version)
            && let Some((_, key, _)) = ring.earlier.iter().find(|(set, _, until)| *set == v && *until > now)
        {
            return key.clone();
        }
        ring.current.clone()
    }

    /// The current key.
    pub fn current(&self) -> Arc<FileKey> {
        self.read().current.clone()
    }

    /// Drops the earlier keys whose overlap has ended by `now`; true when any did (documents
    /// they signed are then re-signed with the current key).
    pub fn overlap_ended(&self, now: u64) -> bool {
        if self.read().earlier.iter().all(|(_, _, until)| *until > now) {
            return false;
        }
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let before = ring.earlier.len();
        ring.earlier.retain(|(_, _, until)| *until > now);
        ring.earlier.len() != before
    }
}

impl Signer for KeyRing {
    fn key_id(&self) -> String {
        self.current().key_id()
    }
    fn public_key(&self) -> PublicKey {
        self.current().public_key()
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.current().sign(message)
    }
}

fn build(root: &Path, sets: &[SetRow]) -> Result<Ring, KeyRingError> {
    let last = sets.last().ok_or_else(|| KeyRingError::Inconsistent("no trust set recorded".into()))?;
    let current = Arc::new(FileKey::load(&root.join(&last.key_file))?);
    let store = TrustStore::from_bytes(&last.trust).map_err(|e| KeyRingError::Inconsistent(e.to_string()))?;
    if store.get(&current.key_id()).is_none() {
        return Err(KeyRingError::Inconsistent(format!("set {} does not list its own key", last.version)));
    }
    // Set N's key signs for devices on set N until rotation N+1's overlap ends.
    let mut earlier = Vec::new();
    for pair in sets.windows(2) {
        let (set, next) = (&pair[0], &pair[1]);
        let path = root.join(&set.key_file);
        if next.overlap_until > now() as u64 && path.exists() {
            earlier.push((set.version, Arc::new(FileKey::load(&path)?), next.overlap_until));
        }
    }
    let chain = TrustChain { rotations: sets.iter().filter_map(|s| s.rotation.clone()).collect() };
    Ok(Ring { version: last.version, current, earlier, chain, trust: last.trust.clone() })
}

/// Makes a new signing key and trust set (see the module docs). Safe while the controller
/// runs: the key file is written first, then the set is recorded in one transaction.
pub fn rotate(db: &Db, root: &Path, overlap_secs: u64, revoke: bool, actor: &str) -> Result<Rotation, KeyRingError> {
    let ring = KeyRing::load(db, root)?;
    let old = ring.current();
    let version = ring.version() + 1;
    let key = FileKey::generate()?;
    let key_file = key_file_name(&key.key_id());
    key.save(&root.join(&key_file))?;
    let trust = TrustStore::new(version, [key.public_key()]).to_bytes();
    let rotation = TrustRotation::sign(&trust, old.as_ref());
    let overlap_until = if revoke { 0 } else { now() as u64 + overlap_secs };
    let summary =
        Rotation { version, key_id: key.key_id(), replaced_key_id: old.key_id(), overlap_until, revoked: revoke };
    let detail = serde_json::to_value(&summary).unwrap_or_default();
    let old_files: Vec<String> = db.call_blocking(|conn| -> Result<Vec<String>, KeyRingError> {
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO trust_sets (version, trust, rotation, key_id, key_file, created_at, overlap_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                version as i64,
                trust,
                serde_json::to_string(&rotation).unwrap_or_default(),
                key.key_id(),
                key_file,
                now(),
                overlap_until as i64
            ],
        )?;
        db::audit(&tx, actor, if revoke { "key.revoke" } else { "key.rotate" }, &format!("trust:{version}"), detail)?;
        let files = tx
            .prepare("SELECT key_file FROM trust_sets WHERE version < ?1")?
            .query_map(params![version as i64], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        tx.commit()?;
        Ok(files)
    })?;
    if revoke {
        for file in old_files {
            let path = root.join(&file);
            if path.exists() {
                std::fs::remove_file(&path)
                    .map_err(|source| edgefleet_shared::keys::KeyError::Io { path: path.clone(), source })?;
            }
        }
    }
    Ok(summary)
}
