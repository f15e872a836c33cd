//! The SQLite database: opening (WAL), versioned migrations, and a small async-friendly handle.
//!
//! SQLite serialises writers anyway, so one connection behind a mutex, used from blocking
//! threads, is both simple and correct; every multi-statement change runs in one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer controller.
    #[error("database schema version {found} is newer than this controller's {supported}; upgrade the controller")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A blocking task failed.
    #[error("database task failed: {0}")]
    Task(String),
}

/// Migrations, in order; entry `i` takes the schema from version `i` to `i + 1`. Never edit a
/// released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: registry, artifacts, tokens, audit.
    "
    CREATE TABLE models (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL
    );
    CREATE TABLE versions (
        model_id        INTEGER NOT NULL REFERENCES models(id),
        version         INTEGER NOT NULL,
        manifest        TEXT NOT NULL,
        bundle_sha256   TEXT NOT NULL,
        model_sha256    TEXT NOT NULL,
        signature       TEXT NOT NULL,
        dataset_sha256  TEXT,
        code_commit     TEXT,
        parent_version  INTEGER,
        created_at      INTEGER NOT NULL,
        created_by      TEXT NOT NULL,
        PRIMARY KEY (model_id, version)
    );
    CREATE INDEX versions_dataset ON versions(dataset_sha256);
    CREATE TABLE aliases (
        model_id    INTEGER NOT NULL REFERENCES models(id),
        alias       TEXT NOT NULL,
        version     INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        updated_by  TEXT NOT NULL,
        PRIMARY KEY (model_id, alias),
        FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version)
    );
    CREATE TABLE artifacts (
        sha256             TEXT PRIMARY KEY,
        size               INTEGER NOT NULL,
        compressed_sha256  TEXT NOT NULL,
        compressed_size    INTEGER NOT NULL,
        created_at         INTEGER NOT NULL
    );
    CREATE TABLE version_artifacts (
        model_id  INTEGER NOT NULL,
        version   INTEGER NOT NULL,
        name      TEXT NOT NULL,
        sha256    TEXT NOT NULL REFERENCES artifacts(sha256),
        PRIMARY KEY (model_id, version, name),
        FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version)
    );
    CREATE TABLE tokens (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        hash        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        revoked_at  INTEGER
    );
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    ",
    // 2: fleet: enrollment tokens, devices, per-device desired state.
    "
    CREATE TABLE enrollment_tokens (
        id          INTEGER PRIMARY KEY,
        hash        TEXT NOT NULL UNIQUE,
        uses_left   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        labels      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL
    );
    CREATE TABLE devices (
        id                TEXT PRIMARY KEY,
        public_key        TEXT NOT NULL,
        labels            TEXT NOT NULL,
        enrolled_at       INTEGER NOT NULL,
        enrollment_token  INTEGER REFERENCES enrollment_tokens(id),
        last_seen         INTEGER,
        status            TEXT
    );
    CREATE TABLE desired (
        device_id   TEXT PRIMARY KEY REFERENCES devices(id),
        sequence    INTEGER NOT NULL,
        model       TEXT NOT NULL,
        version     INTEGER NOT NULL,
        envelope    TEXT NOT NULL,
        issued_at   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX desired_expiry ON desired(expires_at);
    ",
    // 3: staged rollouts and the devices each one changed.
    "
    CREATE TABLE rollouts (
        id               INTEGER PRIMARY KEY,
        model            TEXT NOT NULL,
        version          INTEGER NOT NULL,
        plan             TEXT NOT NULL,
        state            TEXT NOT NULL,
        wave             INTEGER NOT NULL,
        wave_started_at  INTEGER NOT NULL,
        reason           TEXT,
        gate_results     TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        created_by       TEXT NOT NULL
    );
    CREATE INDEX rollouts_state ON rollouts(state);
    CREATE TABLE rollout_devices (
        rollout_id       INTEGER NOT NULL REFERENCES rollouts(id),
        device_id        TEXT NOT NULL REFERENCES devices(id),
        wave             INTEGER NOT NULL,
        prev_model       TEXT,
        prev_version     INTEGER,
        baseline_p99_ms  REAL,
        joined_at        INTEGER NOT NULL,
        PRIMARY KEY (rollout_id, device_id)
    );
    ",
    // 4: each rollout device's output class counts on the version it ran before (PSI gate).
    "
    ALTER TABLE rollout_devices ADD COLUMN baseline_classes TEXT;
    ",
    // 5: telemetry (accepted batches, merged windows, sampled rows) and retraining.
    "
    CREATE TABLE telemetry_batches (
        device_id    TEXT NOT NULL,
        sequence     INTEGER NOT NULL,
        received_at  INTEGER NOT NULL,
        samples      INTEGER NOT NULL,
        PRIMARY KEY (device_id, sequence)
    ) WITHOUT ROWID;
    CREATE INDEX telemetry_batches_received ON telemetry_batches(received_at);
    CREATE TABLE telemetry_floor (
        device_id  TEXT PRIMARY KEY,
        sequence   INTEGER NOT NULL
    );
    CREATE TABLE telemetry_windows (
        model           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        device_group    TEXT NOT NULL,
        window_start    INTEGER NOT NULL,
        rows            INTEGER NOT NULL,
        features        TEXT NOT NULL,
        output_classes  TEXT NOT NULL,
        labeled         INTEGER NOT NULL,
        correct         INTEGER NOT NULL,
        PRIMARY KEY (model, version, device_group, window_start)
    );
    CREATE TABLE telemetry_samples (
        id              INTEGER PRIMARY KEY,
        model           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        device_id       TEXT NOT NULL,
        device_group    TEXT NOT NULL,
        batch_sequence  INTEGER NOT NULL,
        request_id      TEXT,
        at_ms           INTEGER NOT NULL,
        inputs          TEXT NOT NULL,
        outputs         TEXT NOT NULL,
        predicted       INTEGER,
        low_confidence  INTEGER NOT NULL,
        label           INTEGER
    );
    CREATE INDEX telemetry_samples_version ON telemetry_samples(model, version, at_ms);
    CREATE INDEX telemetry_samples_request ON telemetry_samples(device_id, request_id);
    CREATE TABLE retrain_policies (
        model   TEXT PRIMARY KEY,
        policy  TEXT NOT NULL
    );
    CREATE TABLE retrain_requests (
        id              INTEGER PRIMARY KEY,
        model           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        snapshot_dir    TEXT NOT NULL,
        dataset_sha256  TEXT NOT NULL,
        rows            INTEGER NOT NULL,
        manifest        TEXT NOT NULL,
        delivery        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX retrain_requests_version ON retrain_requests(model, version);
    ",
    // 6: trust sets and key rotation; which key signed each document; each device's trust set.
    "
    CREATE TABLE trust_sets (
        version        INTEGER PRIMARY KEY,
        trust          BLOB NOT NULL,
        rotation       TEXT,
        key_id         TEXT NOT NULL,
        key_file       TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        overlap_until  INTEGER NOT NULL
    );
    ALTER TABLE desired ADD COLUMN key_id TEXT;
    ALTER TABLE devices ADD COLUMN trust_version INTEGER;
    ",
    // 7: each sample remembers the window its batch was merged into, so a drift report's binned
    // and sampled metrics cover the same batches.
    "
    ALTER TABLE telemetry_samples ADD COLUMN window_start INTEGER;
    CREATE INDEX telemetry_samples_window ON telemetry_samples(model, version, window_start);
    ",
    // 8: a rollout's state is one the controller knows (and its wave an index): the table is
    // rebuilt with CHECK constraints (SQLite cannot add them in place).
    "
    CREATE TABLE rollouts_checked (
        id               INTEGER PRIMARY KEY,
        model            TEXT NOT NULL,
        version          INTEGER NOT NULL CHECK (version >= 1),
        plan             TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('running', 'paused', 'promoting', 'completed', 'aborted')),
        wave             INTEGER NOT NULL CHECK (wave >= 0),
        wave_started_at  INTEGER NOT NULL,
        reason           TEXT,
        gate_results     TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        created_by       TEXT NOT NULL
    );
    INSERT INTO rollouts_checked SELECT id, model, version, plan, state, wave, wave_started_at, reason,
        gate_results, created_at, updated_at, created_by FROM rollouts;
    DROP TABLE rollouts;
    ALTER TABLE rollouts_checked RENAME TO rollouts;
    CREATE INDEX rollouts_state ON rollouts(state);
    ",
    // 9: the device lifecycle: a decommissioned device keeps its row (a tombstone, so its key
    // can never enroll again), enrollment tokens can be revoked, and a device's last will marks
    // it offline without forgetting when it was last seen.
    "
    ALTER TABLE devices ADD COLUMN offline_at INTEGER;
    ALTER TABLE devices ADD COLUMN decommissioned_at INTEGER;
    ALTER TABLE devices ADD COLUMN decommission_reason TEXT;
    ALTER TABLE enrollment_tokens ADD COLUMN revoked_at INTEGER;
    ",
    // 10: delta artifacts, made from an earlier version's model to a newer one, kept in the
    // store under their own digest and looked up by the pair of digests; a delta not smaller
    // than the full artifact is remembered without one (delta_sha256 NULL), so it is not made again.
    "
    CREATE TABLE deltas (
        base_sha256   TEXT NOT NULL,
        target_sha256 TEXT NOT NULL,
        delta_sha256  TEXT,
        delta_size    INTEGER NOT NULL CHECK (delta_size > 0),
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (base_sha256, target_sha256)
    );
    ",
    // 11: leases, so that background work runs in one of the replicas sharing this database
    // (crate::lease).
    "
    CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        epoch       INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    ",
];

/// A shared handle to the database.
#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Every transaction takes the write lock when it begins, so one that must wait for
        // another process (a replica on the same database) waits in the busy handler; a deferred
        // one upgrading from a read snapshot would fail at once with SQLITE_BUSY.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        let mut db = Db { conn: Arc::new(Mutex::new(conn)) };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        let mut conn = self.lock();
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if current > supported {
            return Err(DbError::TooNew { found: current, supported });
        }
        // Foreign keys are off while a migration rebuilds a table (SQLite's documented procedure),
        // and every reference is checked before it commits.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let migrated = (|| -> Result<(), DbError> {
            for (ix, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                // Another replica starting on the same database may have applied it meanwhile.
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
                if applied > ix as i64 {
                    continue;
                }
                tx.execute_batch(sql)?;
                let broken: Option<String> = tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
                if let Some(table) = broken {
                    return Err(DbError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                        Some(format!("migration {} leaves a broken reference in {table}", ix + 1)),
                    )));
                }
                tx.pragma_update(None, "user_version", ix as i64 + 1)?;
                tx.commit()?;
                tracing::info!(version = ix + 1, "Database migrated.");
            }
            Ok(())
        })();
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrated
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-statement leaves SQLite itself consistent (the transaction rolls back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }

    /// Runs `f` synchronously (start-up, tests).
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut self.lock())
    }
}

/// Unix seconds now, for the time a record was written (decisions take an injected clock).
pub fn now() -> i64 {
    edgefleet_shared::clock::unix_secs() as i64
}

/// Appends an audit record inside the caller's transaction.
pub fn audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![now(), actor, action, target, detail.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_record_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let db = Db::open(&path).expect("open");
        let v: i64 = db.call_blocking(|c| c.pragma_query_value(None, "user_version", |r| r.get(0))).expect("version");
        assert_eq!(v, MIGRATIONS.len() as i64);
        drop(db);
        Db::open(&path).expect("reopen is a no-op");
        let mode: String = Db::open(&path)
            .expect("open")
            .call_blocking(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .expect("mode");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        Connection::open(&path).expect("create").pragma_update(None, "user_version", 99).expect("bump");
        assert!(matches!(Db::open(&path), Err(DbError::TooNew { found: 99, .. })));
    }

    #[test]
    fn persisted_states_are_checked_and_old_rollouts_survive_the_rebuild() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        {
            // A database as a controller before migration 8 left it, with a rollout and its device.
            let mut conn = Connection::open(&path).expect("create");
            let tx = conn.transaction().expect("tx");
            for sql in &MIGRATIONS[..7] {
                tx.execute_batch(sql).expect("old migration");
            }
            tx.execute_batch(
                "INSERT INTO devices (id, public_key, labels, enrolled_at) VALUES ('dev-1', 'k', '{}', 1);
                 INSERT INTO rollouts VALUES (1, 'm', 1, '{}', 'paused', 0, 1, NULL, NULL, 1, 1, 'op');
                 INSERT INTO rollout_devices (rollout_id, device_id, wave, joined_at) VALUES (1, 'dev-1', 0, 1);
                 PRAGMA user_version = 7;",
            )
            .expect("old rows");
            tx.commit().expect("commit");
        }
        let db = Db::open(&path).expect("migrates");
        db.call_blocking(|c| {
            let state: String = c.query_row("SELECT state FROM rollouts WHERE id = 1", [], |r| r.get(0)).expect("kept");
            assert_eq!(state, "paused");
            let joined: i64 = c.query_row("SELECT COUNT(*) FROM rollout_devices", [], |r| r.get(0)).expect("count");
            assert_eq!(joined, 1);
            let bad = c.execute("UPDATE rollouts SET state = 'Running' WHERE id = 1", []);
            assert!(bad.is_err(), "an unknown state is refused by the schema");
            let bad = c.execute(
                "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES ('x', 'root', 'h', 1, 'a')",
                [],
            );
            assert!(bad.is_err(), "an unknown role is refused by the schema");
            let orphan = c.execute(
                "INSERT INTO rollout_devices (rollout_id, device_id, wave, joined_at) VALUES (9, 'dev-1', 0, 1)",
                [],
            );
            assert!(orphan.is_err(), "foreign keys are on again after migrating");
        });
    }
}
