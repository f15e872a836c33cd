//! Transactions and savepoints: statements that take effect together or not at all.

use super::{Connection, Result};

/// A transaction; derefs to its connection. Dropped without [`Transaction::commit`], it rolls back.
#[derive(Debug)]
pub struct Transaction<'c> {
    conn: &'c mut Connection,
    done: bool,
}

impl<'c> Transaction<'c> {
    pub(super) fn new(conn: &'c mut Connection) -> Self {
        Transaction { conn, done: false }
    }

    /// Commits.
    pub fn commit(mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

impl Transaction<'_> {
    /// A savepoint inside this transaction: [`Savepoint::commit`] keeps what was written since,
    /// dropping it undoes only that (the transaction goes on, on PostgreSQL too, where a failed
    /// statement would otherwise abort the whole transaction).
    pub fn savepoint(&mut self) -> Result<Savepoint<'_>> {
        self.conn.execute_batch("SAVEPOINT edgefleet")?;
        Ok(Savepoint { conn: self.conn, done: false })
    }
}

/// A savepoint; derefs to its connection. Dropped without [`Savepoint::commit`], it rolls back
/// to where it began.
#[derive(Debug)]
pub struct Savepoint<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Savepoint<'_> {
    /// Keeps what was written since the savepoint.
    pub fn commit(mut self) -> Result<()> {
        self.conn.execute_batch("RELEASE SAVEPOINT edgefleet")?;
        self.done = true;
        Ok(())
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Failing, the enclosing transaction fails at its next statement or commit.
            let _ = self.conn.execute_batch("ROLLBACK TO SAVEPOINT edgefleet; RELEASE SAVEPOINT edgefleet");
        }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A failed rollback leaves nothing to do here: SQLite rolls back on the next BEGIN's
            // failure, PostgreSQL when the connection closes.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
