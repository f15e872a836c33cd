//! Operator bearer tokens with roles, stored hashed: creation, the bootstrap admin, lookup.

use crate::sql::{Connection, OptionalExtension, params};
use edgefleet_shared::api::tokens::{Role, new_token};

use crate::db::{self, now};

/// The authenticated operator behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token id.
    pub token_id: i64,
    /// Token name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{}:{}", self.token_id, self.name)
    }
}

/// SHA-256 (hex) of a token: what the database stores.
pub fn hash_token(token: &str) -> String {
    edgefleet_shared::verify::sha256_hex(token.as_bytes())
}

/// Stores a token (hashed) and audits it; returns its id.
pub fn insert_token(conn: &Connection, name: &str, role: Role, token: &str, actor: &str) -> crate::sql::Result<i64> {
    let id: i64 = conn.query_row(
        "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        params![name, role.as_str(), hash_token(token), now(), actor],
        |r| r.get(0),
    )?;
    db::audit(conn, actor, "token.create", &format!("token:{id}"), serde_json::json!({"name": name, "role": role}))?;
    Ok(id)
}

/// Creates the bootstrap admin token when the database has none. Returns the plaintext
/// token to print once, or `None` when tokens exist already. `preset` (from
/// `EDGEFLEET_ADMIN_TOKEN`) is used instead of a random token.
pub fn bootstrap_admin(conn: &mut Connection, preset: Option<String>) -> Result<Option<String>, crate::Error> {
    let tx = conn.transaction().map_err(db::DbError::from)?;
    let existing: i64 = tx.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0)).map_err(db::DbError::from)?;
    if existing > 0 {
        return Ok(None);
    }
    let token = match preset {
        Some(t) if t.len() >= 16 => t,
        Some(_) => return Err(crate::Error::Config("EDGEFLEET_ADMIN_TOKEN must be at least 16 characters".into())),
        None => new_token().map_err(|e| crate::Error::Config(format!("cannot generate a token: {e}")))?,
    };
    insert_token(&tx, "bootstrap-admin", Role::Admin, &token, "controller").map_err(db::DbError::from)?;
    tx.commit().map_err(db::DbError::from)?;
    Ok(Some(token))
}

/// Creates a new admin token for an operator who lost every admin token: only someone who can
/// write the controller's data directory can run it (`edgefleet-controller recover-admin`).
/// Returns the plaintext.
pub fn recover_admin(conn: &mut Connection) -> Result<String, crate::Error> {
    let token = new_token().map_err(|e| crate::Error::Config(format!("cannot generate a token: {e}")))?;
    let tx = conn.transaction().map_err(db::DbError::from)?;
    insert_token(&tx, "recovered-admin", Role::Admin, &token, "recover-admin").map_err(db::DbError::from)?;
    tx.commit().map_err(db::DbError::from)?;
    Ok(token)
}

/// Writes `token` to `path` readable by the owner only (0600), replacing any older file, so
/// that it never passes through a log or the journal.
pub fn write_token_file(path: &std::path::Path, token: &str) -> Result<(), crate::Error> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| crate::Error::Startup(format!("cannot write {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(format!("{token}\n").as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Finds the live token with this plaintext.
pub fn lookup(conn: &Connection, token: &str) -> crate::sql::Result<Option<Caller>> {
    conn.query_row(
        "SELECT id, name, role FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
        params![hash_token(token)],
        |r| {
            let text: String = r.get(2)?;
            let role = Role::parse(&text).ok_or_else(|| crate::sql::Error::conversion(2, format!("role {text:?}")))?;
            Ok(Caller { token_id: r.get(0)?, name: r.get(1)?, role })
        },
    )
    .optional()
}

/// How long a console session lasts after sign-in.
pub const SESSION_SECS: i64 = 8 * 3600;

/// A new console session: the cookie value (only its hash is stored), its CSRF token and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The cookie's value, shown once.
    pub cookie: String,
    /// The CSRF token state-changing requests must send.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Starts a console session for the operator token `token` at `now` (`None` for an unknown or
/// revoked token), audited.
pub fn create_session(conn: &Connection, token: &str, now: i64) -> Result<Option<(Caller, NewSession)>, crate::Error> {
    let Some(caller) = lookup(conn, token).map_err(db::DbError::from)? else { return Ok(None) };
    let random = || new_token().map_err(|e| crate::Error::Config(format!("cannot generate a session: {e}")));
    let (cookie, csrf) = (random()?, random()?);
    let expires_at = now + SESSION_SECS;
    conn.execute(
        "INSERT INTO sessions (hash, token_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash_token(&cookie), caller.token_id, csrf, now, expires_at],
    )
    .map_err(db::DbError::from)?;
    db::audit(conn, &caller.actor(), "session.create", &format!("token:{}", caller.token_id), serde_json::json!({}))
        .map_err(db::DbError::from)?;
    Ok(Some((caller, NewSession { cookie, csrf, expires_at })))
}

/// A live console session: who it is, its CSRF token and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The operator token it stands for (which must still be live).
    pub caller: Caller,
    /// The CSRF token.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The live session behind a cookie at `now`.
pub fn session(conn: &Connection, cookie: &str, now: i64) -> crate::sql::Result<Option<Session>> {
    conn.query_row(
        "SELECT t.id, t.name, t.role, s.csrf, s.expires_at FROM sessions s JOIN tokens t ON t.id = s.token_id
         WHERE s.hash = ?1 AND s.expires_at > ?2 AND t.revoked_at IS NULL",
        params![hash_token(cookie), now],
        |r| {
            let text: String = r.get(2)?;
            let role = Role::parse(&text).ok_or_else(|| crate::sql::Error::conversion(2, format!("role {text:?}")))?;
            Ok(Session {
                caller: Caller { token_id: r.get(0)?, name: r.get(1)?, role },
                csrf: r.get(3)?,
                expires_at: r.get(4)?,
            })
        },
    )
    .optional()
}

/// Ends the session behind a cookie (signing out); true when there was one.
pub fn end_session(conn: &Connection, cookie: &str) -> crate::sql::Result<bool> {
    Ok(conn.execute("DELETE FROM sessions WHERE hash = ?1", params![hash_token(cookie)])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_for_its_token_until_it_expires_is_ended_or_the_token_is_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::Db::open(&dir.path().join("c.db")).expect("db");
        db.call_blocking(|conn| {
            let token = "efk_console_test_token_000";
            let id = insert_token(conn, "ops", Role::Operator, token, "test").expect("token");
            assert!(create_session(conn, "efk_not_a_token_at_all", 100).expect("create").is_none());
            let (caller, new) = create_session(conn, token, 100).expect("create").expect("session");
            assert_eq!((caller.token_id, caller.role), (id, Role::Operator));
            assert_ne!(new.cookie, new.csrf);
            let live = session(conn, &new.cookie, 101).expect("lookup").expect("live");
            assert_eq!(
                (live.caller, live.csrf.as_str(), live.expires_at),
                (caller, new.csrf.as_str(), 100 + SESSION_SECS)
            );
            assert!(session(conn, &new.cookie, 100 + SESSION_SECS).expect("lookup").is_none(), "expired");
            assert!(session(conn, token, 101).expect("lookup").is_none(), "the token itself is no cookie");

            let (_, second) = create_session(conn, token, 100).expect("create").expect("session");
            assert!(end_session(conn, &second.cookie).expect("end"));
            assert!(session(conn, &second.cookie, 101).expect("lookup").is_none(), "signed out");
            assert!(!end_session(conn, &second.cookie).expect("end"));

            conn.execute("UPDATE tokens SET revoked_at = 1 WHERE id = ?1", params![id]).expect("revoke");
            assert!(session(conn, &new.cookie, 101).expect("lookup").is_none(), "revoked token");
        });
    }
}
