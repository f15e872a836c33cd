//! One blocking SQL API over the two engines the controller keeps its state in: SQLite
//! (rusqlite, the default, one file in the data directory) and PostgreSQL (the synchronous
//! `postgres` client, for replicas sharing one database).
//!
//! It mirrors the part of rusqlite the controller uses (`execute`, `query_row`, `prepare` +
//! `query_map`, transactions, `params!`), so storage code is written once, in SQL both engines
//! accept: `?N` placeholders (rewritten to `$N` for PostgreSQL), `ON CONFLICT` upserts,
//! `RETURNING`. Where the dialects differ the code asks [`Connection::dialect`].
//!
//! Transactions keep SQLite's contract on both engines: one writer at a time. SQLite takes its
//! write lock at `BEGIN IMMEDIATE`; on PostgreSQL every transaction takes one transaction-scoped
//! advisory lock first, so replicas' read-modify-write steps serialise exactly as they do on a
//! shared SQLite file.

mod transaction;
mod value;

use std::cell::RefCell;
use std::collections::HashMap;

pub use transaction::{Savepoint, Transaction};
pub use value::{FromSql, ToSql, Value};

/// The advisory lock every PostgreSQL transaction takes is (this, a hash of the schema), so
/// controllers of different fleets in one database (one schema each) do not wait on each other.
const WRITER_LOCK: i32 = 0x6566_6c74;
/// Prepared statements kept per PostgreSQL connection (dynamic SQL beyond this restarts the cache).
const STATEMENT_CACHE: usize = 512;

/// SQL failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite reported an error.
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL reported an error (its message, detail and hint when the server sent them).
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    /// A query expected to return a row returned none.
    #[error("query returned no rows")]
    NoRows,
    /// A column did not convert to the type asked for.
    #[error("column {column}: {detail}")]
    Conversion {
        /// Index of the column.
        column: usize,
        /// Why.
        detail: String,
    },
    /// A parameter could not be bound.
    #[error("parameter: {0}")]
    Parameter(String),
    /// Text with a NUL byte, which PostgreSQL cannot store or compare (SQLite can): refused on
    /// both engines' behalf before it reaches PostgreSQL, so callers can answer it as bad input.
    #[error("text must not contain NUL bytes")]
    NulInText,
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl Error {
    /// A column that holds a value the caller cannot use (a corrupt JSON document, an unknown role).
    pub fn conversion(column: usize, detail: impl std::fmt::Display) -> Self {
        Error::Conversion { column, detail: detail.to_string() }
    }

    /// Whether the statement broke a uniqueness or primary-key constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        f.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    )
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns "no row" into `None`, as rusqlite's trait of the same name.
pub trait OptionalExtension<T> {
    /// `Ok(None)` where the query returned no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Parameters of one statement: `params![a, b]`, or `[]` for none.
pub trait Params {
    /// The values to bind, in order.
    fn values(self) -> Result<Vec<Value>>;
}

impl Params for &[&dyn ToSql] {
    fn values(self) -> Result<Vec<Value>> {
        self.iter().map(|p| p.to_value()).collect()
    }
}

impl<const N: usize> Params for [&dyn ToSql; N] {
    fn values(self) -> Result<Vec<Value>> {
        self.iter().map(|p| p.to_value()).collect()
    }
}

impl Params for Vec<Value> {
    fn values(self) -> Result<Vec<Value>> {
        Ok(self)
    }
}

/// Statement parameters, as rusqlite's macro of the same name.
#[macro_export]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::sql::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::ToSql),+] as &[&dyn $crate::sql::ToSql] };
}
pub use crate::sql_params as params;

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The JSON text in `column` at `path` (`a.b`): a string's value, a number's digits, an
    /// array or object as JSON text; NULL where absent.
    pub fn json_text(self, column: &str, path: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{path}')"),
            Dialect::Postgres => format!("(({column})::jsonb #>> '{{{}}}')", path.replace('.', ",")),
        }
    }

    /// The integer in `column`'s JSON at `path`; NULL where absent.
    pub fn json_int(self, column: &str, path: &str) -> String {
        match self {
            Dialect::Sqlite => self.json_text(column, path),
            Dialect::Postgres => format!("({})::BIGINT", self.json_text(column, path)),
        }
    }

    /// The larger of two values (SQLite's two-argument `MAX`).
    pub fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("MAX({a}, {b})"),
            Dialect::Postgres => format!("GREATEST({a}, {b})"),
        }
    }
}

/// A connection to either engine.
pub struct Connection {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

struct Pg {
    /// Always `Some` until dropped (see the `Drop` impl).
    client: RefCell<Option<postgres::Client>>,
    schema_key: i32,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("dialect", &self.dialect()).finish()
    }
}

/// Index of a column in a row.
pub trait RowIndex {
    /// The index.
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One result row.
#[allow(missing_debug_implementations, reason = "rusqlite's row has no Debug")]
pub enum Row<'r> {
    /// From SQLite.
    Sqlite(&'r rusqlite::Row<'r>),
    /// From PostgreSQL.
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `idx` as `T`.
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let column = idx.index();
        let value = match self {
            Row::Sqlite(r) => Value::from(r.get::<_, rusqlite::types::Value>(column)?),
            Row::Postgres(r) => r.try_get::<_, value::PgValue>(column)?.0,
        };
        T::from_value(value).map_err(|detail| Error::Conversion { column, detail })
    }
}

impl Connection {
    /// Wraps an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        Connection { inner: Inner::Sqlite(conn) }
    }

    /// Connects to PostgreSQL (`postgres://user@host:port/db`, or the key=value form).
    pub fn postgres(url: &str, password: Option<&str>) -> Result<Self> {
        let mut config = url.parse::<postgres::Config>()?;
        if let Some(p) = password {
            config.password(p);
        }
        config.application_name("edgefleet-controller");
        let mut client = config.connect(postgres::NoTls)?;
        let schema: Option<String> = client.query_one("SELECT current_schema()", &[])?.get(0);
        let Some(schema) = schema else {
            return Err(Error::Parameter("the database's search_path names no schema that exists".into()));
        };
        let schema_key: i32 = client.query_one("SELECT hashtext($1)", &[&schema])?.get(0);
        Ok(Connection {
            inner: Inner::Postgres(Box::new(Pg {
                client: RefCell::new(Some(client)),
                schema_key,
                statements: RefCell::new(HashMap::new()),
            })),
        })
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            Inner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection underneath (pragmas, tests).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    /// Whether the connection is gone (PostgreSQL restarted or the network broke); SQLite's never is.
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            Inner::Postgres(pg) => pg.client().is_closed(),
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values()?;
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values.iter()))?),
            Inner::Postgres(pg) => {
                let stmt = pg.prepare(sql)?;
                let n = pg.client().execute(&stmt, &pg_params(&values)?)?;
                Ok(n as usize)
            }
        }
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(pg) => Ok(pg.client().batch_execute(sql)?),
        }
    }

    /// The first row of a query, mapped by `f`; [`Error::NoRows`] when there is none.
    pub fn query_row<T, P: Params, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let values = params.values()?;
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(Error::NoRows),
                }
            }
            Inner::Postgres(pg) => {
                let stmt = pg.prepare(sql)?;
                let row = pg.client().query_opt(&stmt, &pg_params(&values)?)?;
                match row {
                    Some(r) => f(&Row::Postgres(&r)),
                    None => Err(Error::NoRows),
                }
            }
        }
    }

    /// A statement to run with [`Statement::query_map`] or [`Statement::execute`] (cached on both engines).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement { conn: self, sql: sql.to_owned() })
    }

    /// As [`Connection::prepare`].
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    /// Begins a transaction that holds the writer lock until it commits or is dropped (rollback).
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        match &self.inner {
            Inner::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            Inner::Postgres(pg) => {
                let mut client = pg.client();
                client.batch_execute("BEGIN")?;
                if let Err(e) = client.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&WRITER_LOCK, &pg.schema_key])
                {
                    let _ = client.batch_execute("ROLLBACK");
                    return Err(e.into());
                }
            }
        }
        Ok(Transaction::new(self))
    }
}

impl Pg {
    fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| c.as_mut().expect("open until dropped"))
    }

    fn prepare(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client().prepare(&placeholders(sql))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // The client closes its connection on its own runtime, which cannot run inside another
        // (a controller dropping its last handle in async code): there, it closes on a thread.
        let Some(client) = self.client.get_mut().take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(move || drop(client));
            });
        }
    }
}

fn pg_params(values: &[Value]) -> Result<Vec<&(dyn postgres::types::ToSql + Sync)>> {
    if values.iter().any(|v| matches!(v, Value::Text(t) if t.contains('\0'))) {
        return Err(Error::NulInText);
    }
    Ok(values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect())
}

/// Rewrites SQLite's `?N` (and bare `?`) placeholders to PostgreSQL's `$N`, leaving quoted text alone.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next = 1;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    out.push_str(&next.to_string());
                    next += 1;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// A statement bound to its connection.
#[derive(Debug)]
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    /// Every row, mapped by `f`.
    pub fn query_map<T, P: Params, F>(&mut self, params: P, mut f: F) -> Result<std::vec::IntoIter<Result<T>>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let values = params.values()?;
        let mapped: Vec<Result<T>> = match &self.conn.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(&self.sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r)));
                }
                out
            }
            Inner::Postgres(pg) => {
                let stmt = pg.prepare(&self.sql)?;
                let rows = pg.client().query(&stmt, &pg_params(&values)?)?;
                rows.iter().map(|r| f(&Row::Postgres(r))).collect()
            }
        };
        Ok(mapped.into_iter())
    }

    /// Runs the statement; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    /// The first row, mapped by `f`.
    pub fn query_row<T, P: Params, F>(&mut self, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.conn.query_row(&self.sql, params, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
        assert_eq!(placeholders("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(placeholders("WHERE a = '?1' AND b = ?2"), "WHERE a = '?1' AND b = $2");
    }

    #[test]
    fn sqlite_rows_map_and_transactions_roll_back_unless_committed() {
        let mut conn = Connection::sqlite(rusqlite::Connection::open_in_memory().expect("open"));
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, score REAL)")
            .expect("schema");
        let id: i64 = conn
            .query_row("INSERT INTO t (name, score) VALUES (?1, ?2) RETURNING id", params!["a", 1.5], |r| r.get(0))
            .expect("insert");
        assert_eq!(id, 1);
        let dup = conn.execute("INSERT INTO t (name) VALUES (?1)", params!["a"]).expect_err("unique");
        assert!(dup.is_unique_violation(), "{dup}");
        {
            let tx = conn.transaction().expect("begin");
            tx.execute("INSERT INTO t (name) VALUES (?1)", params!["b"]).expect("insert");
        }
        let tx = conn.transaction().expect("begin");
        tx.execute("INSERT INTO t (name) VALUES (?1)", params!["c"]).expect("insert");
        tx.commit().expect("commit");
        let names: Vec<String> = conn
            .prepare("SELECT name FROM t ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_>>()
            .expect("rows");
        assert_eq!(names, ["a", "c"]);
        let missing = conn.query_row("SELECT id FROM t WHERE name = ?1", params!["zz"], |r| r.get::<_, i64>(0));
        assert_eq!(missing.optional().expect("optional"), None);
        let bad = conn.query_row("SELECT name FROM t WHERE id = 1", [], |r| r.get::<_, i64>(0));
        assert!(matches!(bad, Err(Error::Conversion { column: 0, .. })), "{bad:?}");
    }
}
