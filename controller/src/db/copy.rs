//! `edgefleet-controller migrate`: copies a SQLite controller's database into an empty
//! PostgreSQL one, table by table in one transaction, and checks every table's row count.

use super::{Db, DbError, TABLES, Target};
use crate::sql::{self, Dialect, OptionalExtension as _, Value, params};

/// Rows copied per table, in [`TABLES`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// `(table, rows)`.
    pub tables: Vec<(&'static str, u64)>,
}

/// Failures of a copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Opening or writing a database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The source or destination is not one this command copies between.
    #[error("{0}")]
    Refused(String),
}

impl From<sql::Error> for CopyError {
    fn from(e: sql::Error) -> Self {
        CopyError::Db(e.into())
    }
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Db(e.into())
    }
}

/// Copies `from` (SQLite) into `to` (PostgreSQL, migrated here, and empty).
pub fn copy(from: &Target, to: &Target) -> Result<Copied, CopyError> {
    if !matches!(from, Target::Sqlite(p) if p.is_file()) {
        return Err(CopyError::Refused(format!("--from {}: expected an existing SQLite file", from.describe())));
    }
    if !matches!(to, Target::Postgres { .. }) {
        return Err(CopyError::Refused(format!("--to {}: expected a postgres:// database", to.describe())));
    }
    // Opening migrates both to this build's schema, so their tables and columns agree.
    let source = Db::connect(from)?;
    let dest = Db::connect(to)?;
    super::off_runtime(|| {
        let src = source.lock();
        copy_tables(src.as_sqlite().expect("a SQLite source"), &mut dest.lock())
    })
}

fn copy_tables(src: &rusqlite::Connection, dst: &mut sql::Connection) -> Result<Copied, CopyError> {
    let tx = dst.transaction()?;
    for table in TABLES {
        let rows: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if rows > 0 {
            return Err(CopyError::Refused(format!(
                "the destination is not empty ({table} has {rows} rows): migrate into a new database"
            )));
        }
    }
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let columns = columns(&tx, table)?;
        let list = columns.join(", ");
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", marks.join(", "));
        let mut select = src.prepare(&format!("SELECT {list} FROM {table}"))?;
        let mut rows = select.query([])?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            let values = (0..columns.len())
                .map(|i| row.get::<_, rusqlite::types::Value>(i).map(Value::from))
                .collect::<Result<Vec<_>, _>>()?;
            tx.execute(&insert, values)?;
            n += 1;
        }
        let there: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if there as u64 != n {
            return Err(CopyError::Refused(format!("{table}: copied {n} rows but the destination holds {there}")));
        }
        if tx.dialect() == Dialect::Postgres && identity(&tx, table)? {
            // The identity column continues after the copied ids.
            tx.query_row(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                ),
                [],
                |r| r.get::<_, i64>(0),
            )?;
        }
        copied.push((*table, n));
    }
    tx.commit()?;
    Ok(Copied { tables: copied })
}

/// Whether the destination table's `id` is an identity column.
fn identity(conn: &sql::Connection, table: &str) -> Result<bool, CopyError> {
    let found: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 AND column_name = 'id' AND is_identity = 'YES'",
            params![table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// The destination table's columns, in order.
fn columns(conn: &sql::Connection, table: &str) -> Result<Vec<String>, CopyError> {
    let names = conn
        .prepare(
            "SELECT column_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position",
        )?
        .query_map(params![table], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    if names.is_empty() {
        return Err(CopyError::Refused(format!("the destination has no table {table}")));
    }
    Ok(names)
}
