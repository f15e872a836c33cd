//! The database: SQLite in the data directory (WAL) by default, or PostgreSQL when
//! `[database] url` names one, with versioned migrations for each and a small async-friendly
//! handle.
//!
//! One connection behind a mutex, used from blocking threads: SQLite serialises writers anyway,
//! and on PostgreSQL every transaction takes the same writer lock (crate::sql), so replicas keep
//! the single-writer contract the storage code is written to. Every multi-statement change runs
//! in one transaction.

pub mod copy;
mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::{Arc, Mutex};

pub use postgres::TABLES;

use crate::sql::{self, Connection, Dialect, OptionalExtension as _, params};

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The engine reported an error.
    #[error("database: {0}")]
    Sql(#[from] sql::Error),
    /// The database was written by a newer controller.
    #[error("database schema version {found} is newer than this controller's {supported}; upgrade the controller")]
    TooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A blocking task failed.
    #[error("database task failed: {0}")]
    Task(String),
    /// A migration would leave a row referring to one that does not exist.
    #[error("migration {version} leaves a broken reference in {table}")]
    BrokenReference {
        /// The migration.
        version: usize,
        /// The table holding the reference.
        table: String,
    },
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e.into())
    }
}

/// Where the controller keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://...` (or the key=value form).
        url: String,
        /// The password, where it is not in the URL.
        password: Option<Secret>,
    },
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Target {
    /// Parses `sqlite:PATH` or `postgres://...` / `postgresql://...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<::postgres::Config>().map_err(|e| format!("database url: {e}"))?;
            Ok(Target::Postgres { url: s.to_owned(), password: None })
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            Ok(Target::Sqlite(path.into()))
        } else {
            Err(format!("database {s:?}: expected postgres://... or sqlite:PATH"))
        }
    }

    /// Where, for logs: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("sqlite:{}", p.display()),
            Target::Postgres { url, .. } => match url.parse::<::postgres::Config>() {
                Ok(c) => {
                    let host = match c.get_hosts().first() {
                        Some(::postgres::config::Host::Tcp(h)) => h.clone(),
                        Some(::postgres::config::Host::Unix(p)) => p.display().to_string(),
                        None => "localhost".into(),
                    };
                    let port = c.get_ports().first().copied().unwrap_or(5432);
                    let user = c.get_user().unwrap_or_default();
                    format!("postgres://{user}@{host}:{port}/{}", c.get_dbname().unwrap_or_default())
                }
                Err(_) => "postgres (unparsable url)".into(),
            },
        }
    }
}

/// A shared handle to the database.
#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    target: Arc<Target>,
}

impl Db {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        Self::connect(&Target::Sqlite(path.to_owned()))
    }

    /// Opens and migrates the database `target` names.
    pub fn connect(target: &Target) -> Result<Self, DbError> {
        let conn = match target {
            Target::Sqlite(path) => open_sqlite(path)?,
            Target::Postgres { url, password } => {
                off_runtime(|| Connection::postgres(url, password.as_ref().map(|p| p.0.as_str())))?
            }
        };
        let db = Db { conn: Arc::new(Mutex::new(conn)), target: Arc::new(target.clone()) };
        db.call_blocking(|conn| match conn.dialect() {
            Dialect::Sqlite => migrate_sqlite(conn),
            Dialect::Postgres => migrate_postgres(conn),
        })?;
        tracing::info!(database = %db.describe(), "Database open.");
        Ok(db)
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        match *self.target {
            Target::Sqlite(_) => Dialect::Sqlite,
            Target::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// Where the database is, for logs (no password).
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-statement leaves the database itself consistent (the transaction rolls back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = db.lock();
            if guard.is_closed()
                && let Target::Postgres { url, password } = &*db.target
            {
                // PostgreSQL restarted or the link broke: this call gets a fresh connection.
                tracing::warn!(database = %db.describe(), "Database connection lost; reconnecting.");
                *guard = Connection::postgres(url, password.as_ref().map(|p| p.0.as_str()))
                    .map_err(|e| E::from(DbError::from(e)))?;
            }
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }

    /// Runs `f` synchronously (start-up, blocking tasks, tests). PostgreSQL's client runs its own
    /// runtime, which cannot start inside another's, so there `f` may run on a thread of its own;
    /// SQLite runs on this one.
    pub fn call_blocking<T: Send>(&self, f: impl FnOnce(&mut Connection) -> T + Send) -> T {
        match self.dialect() {
            Dialect::Sqlite => f(&mut self.lock()),
            Dialect::Postgres => off_runtime(|| f(&mut self.lock())),
        }
    }
}

/// Runs `f` where a PostgreSQL client may block: on this thread when no async runtime is
/// entered here, else on a scoped thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn open_sqlite(path: &Path) -> Result<Connection, DbError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every transaction takes the write lock when it begins (crate::sql), so one that must wait
    // for another process (a replica on the same database) waits in the busy handler.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(Connection::sqlite(conn))
}

fn migrate_sqlite(conn: &mut Connection) -> Result<(), DbError> {
    let version = |c: &Connection| -> Result<i64, DbError> {
        Ok(c.as_sqlite().expect("sqlite").pragma_query_value(None, "user_version", |r| r.get(0))?)
    };
    let current = version(conn)?;
    let supported = sqlite::MIGRATIONS.len() as i64;
    if current > supported {
        return Err(DbError::TooNew { found: current, supported });
    }
    // Foreign keys are off while a migration rebuilds a table (SQLite's documented procedure),
    // and every reference is checked before it commits.
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let migrated = (|| -> Result<(), DbError> {
        for (ix, sql) in sqlite::MIGRATIONS.iter().enumerate().skip(current as usize) {
            // Another replica starting on the same database may have applied it meanwhile.
            let tx = conn.transaction()?;
            if version(&tx)? > ix as i64 {
                continue;
            }
            tx.execute_batch(sql)?;
            let broken: Option<String> = tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
            if let Some(table) = broken {
                return Err(DbError::BrokenReference { version: ix + 1, table });
            }
            tx.execute_batch(&format!("PRAGMA user_version = {}", ix + 1))?;
            tx.commit()?;
            tracing::info!(version = ix + 1, "Database migrated.");
        }
        Ok(())
    })();
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    migrated
}

fn migrate_postgres(conn: &mut Connection) -> Result<(), DbError> {
    let supported = postgres::MIGRATIONS.len() as i64;
    // The transaction's writer lock keeps replicas starting together from migrating twice.
    let tx = conn.transaction()?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let current: i64 =
        tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?.unwrap_or_default();
    if current > supported {
        return Err(DbError::TooNew { found: current, supported });
    }
    for (ix, sql) in postgres::MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tracing::info!(version = ix + 1, "Database migrated.");
    }
    if current < supported {
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", params![supported])?;
    }
    tx.commit()?;
    Ok(())
}

/// Unix seconds now, for the time a record was written (decisions take an injected clock).
pub fn now() -> i64 {
    edgefleet_shared::clock::unix_secs() as i64
}

/// Appends an audit record inside the caller's transaction.
pub fn audit(conn: &Connection, actor: &str, action: &str, target: &str, detail: serde_json::Value) -> sql::Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now(), actor, action, target, detail.to_string()],
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
        let v: i64 = db
            .call_blocking(|c| c.as_sqlite().expect("sqlite").pragma_query_value(None, "user_version", |r| r.get(0)))
            .expect("version");
        assert_eq!(v, sqlite::MIGRATIONS.len() as i64);
        drop(db);
        Db::open(&path).expect("reopen is a no-op");
        let mode: String = Db::open(&path)
            .expect("open")
            .call_blocking(|c| c.as_sqlite().expect("sqlite").pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .expect("mode");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        rusqlite::Connection::open(&path).expect("create").pragma_update(None, "user_version", 99).expect("bump");
        assert!(matches!(Db::open(&path), Err(DbError::TooNew { found: 99, .. })));
    }

    #[test]
    fn persisted_states_are_checked_and_old_rollouts_survive_the_rebuild() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        {
            // A database as a controller before migration 8 left it, with a rollout and its device.
            let mut conn = rusqlite::Connection::open(&path).expect("create");
            let tx = conn.transaction().expect("tx");
            for sql in &sqlite::MIGRATIONS[..7] {
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
